"""Auditing CLIPs trained elsewhere (``model.arch=open_clip:NAME``): the vision-language test on open_clip files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

import dejavu
from dejavu.cli import _parser, _shorthand_overrides
from dejavu.artifacts import load_table
from dejavu.config import load_config
from dejavu.data.records import index_of_ids
from dejavu.errors import ConfigError
from dejavu.metrics.schema import read_metrics
from dejavu.models.outside import load_outside, register_module
from dejavu.models.outside_clip import absolute_arch
from dejavu.runs import Run

ROOT = Path(__file__).resolve().parents[1]
CLIP_SMOKE = ROOT / "configs" / "clip_smoke.yaml"
# A ViT-B/32-shaped CLIP shrunk to 32 px (open_clip's model-config format).
TINY = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
# No resize between the catalog and the network: the check below feeds open_clip the catalog's pixels.
SIZES = {"data.image_size": 32, "data.input_size": 32}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two tiny open_clip models saved as open_clip's trainer saves them (DDP prefix, epoch and name beside)."""
    folder = tmp_path_factory.mktemp("open_clip")
    config = folder / "tiny_clip.json"
    config.write_text(json.dumps(TINY))
    open_clip.add_model_config(config)
    paths = {}
    for seed, model in ((0, "A"), (1, "B")):
        torch.manual_seed(seed)
        network = open_clip.create_model("tiny_clip")
        paths[model] = folder / f"{model}.pt"
        torch.save({"epoch": 3, "name": "tiny", "state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}},
                   paths[model])
    # A's weights also as a TorchScript archive, the form of OpenAI's CLIP releases.
    with pytest.warns(FutureWarning):  # torch.jit is deprecated; such archives are still audited
        torch.jit.script(_load(paths["A"])).save(folder / "A_script.pt")
    paths["A_script"] = folder / "A_script.pt"
    return config, paths


def _load(path: Path) -> torch.nn.Module:
    model = open_clip.create_model("tiny_clip")
    state = torch.load(path, weights_only=True)["state_dict"]
    model.load_state_dict({key.removeprefix("module."): value for key, value in state.items()})
    return model.eval()


def _open_clip_neighbours(path: Path, images: np.ndarray, captions: list[str], k: int) -> np.ndarray:
    """Each caption's k nearest images by open_clip's own API: its model, tokenizer and normalisation."""
    model = _load(path)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    pixels = (pixels - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        image = F.normalize(model.encode_image(pixels), dim=1)
        text = F.normalize(model.encode_text(open_clip.get_tokenizer("tiny_clip")(captions)), dim=1)
    return torch.topk(text @ image.T, k + 1, dim=1)


def test_an_open_clip_checkpoint_is_audited_as_open_clip_embeds_it(files, tmp_path):
    config, paths = files
    out = tmp_path / "audit"
    result = dejavu.audit(target=paths["A"], reference=paths["B"], arch=f"open_clip:{config}", out=out, config=CLIP_SMOKE,
                          **SIZES)
    run = Run(out, load_config(out / "config.json"))
    table = load_table(run)
    found = np.load(out / "vlm" / "neighbours.npz")
    public = index_of_ids(table.ids, found["public_ids"])
    k = result.metrics.vlm.k
    for name in ("A", "T"):
        rows = index_of_ids(table.ids, found[f"ids_{name}"])
        for model in ("A", "B"):
            top = _open_clip_neighbours(paths[model], table.images[public], table.captions[rows].tolist(), k)
            # Rows whose k-th and (k+1)-th images are within float noise could rank either way: compared elsewhere.
            clear = (top.values[:, k - 1] - top.values[:, k]).numpy() > 1e-4
            assert clear.mean() > 0.9
            expected = np.sort(top.indices[:, :k].numpy(), axis=1)[clear]
            assert np.array_equal(np.sort(found[f"neighbours_{name}_{model}"], axis=1)[clear], expected), (name, model)
    source = json.loads((out / "models" / "A" / "source.json").read_text())
    assert source["nested"] == "state_dict" and source["prefix"] == "module." and not source["missing"]
    assert source["mean"] == pytest.approx(OPENAI_MEAN) and source["widths"] == {"backbone": 64, "projector": 32}
    vlm = json.loads((out / "metrics.json").read_text())["vlm"]
    assert set(vlm["directions"]) == {"A", "B"} and vlm["n"] == len(found["ids_A"]) + len(found["ids_B"])
    assert "Vision-language test" in (out / "report.html").read_text()
    # The export for open_clip's own trainer: each training image with its caption.
    with open(out / "data" / "export" / "train_A.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    listed = (out / "data" / "export" / "train_A.txt").read_text().split()
    assert [row["filepath"] for row in rows] == listed
    by_id = dict(zip(table.ids.tolist(), table.captions.tolist()))
    assert all(row["title"] == by_id[Path(row["filepath"]).stem] for row in rows)


def test_a_one_model_open_clip_audit_compares_the_target_with_text_retrieval(files, tmp_path):
    config, paths = files
    out = tmp_path / "one"
    # A config naming a reference (a two-model audit's): without reference=, the audit is still the one-model test.
    two_model = tmp_path / "two_model.yaml"
    two_model.write_text(CLIP_SMOKE.read_text() + f"model: {{reference: {json.dumps(str(paths['B']))}}}\n")
    result = dejavu.audit(target=paths["A_script"], arch=f"open_clip:{config}", out=out, config=two_model,
                          **{**SIZES, "vlm.reference": "text"})
    assert json.loads((out / "models" / "A" / "source.json").read_text())["format"] == "torchscript"
    vlm = result.metrics.vlm
    sets = json.loads((out / "data" / "split.json").read_text())
    assert list(vlm.directions) == ["A"] and vlm.reference == "text"
    assert vlm.n == len(sets["sets"]["A"]) and vlm.control.n == len(sets["sets"]["T"])
    with open(out / "vlm" / "samples.csv", newline="") as handle:
        samples = list(csv.DictReader(handle))
    assert {s["set"] for s in samples} == {"A", "T"} and {s["reference_model"] for s in samples} == {"text"}
    outcome = read_metrics(out / "metrics.json").outcomes["vlm"]
    assert vlm.excess is not None and outcome.statistic.startswith("excess_")
    assert "beyond the control" in (out / "report.html").read_text()


@pytest.mark.parametrize("overrides, message", [
    ({"model.target": "a.pt", "model.reference": "b.pt"}, "model.arch=open_clip:NAME"),
    ({"model.target": "a.pt", "model.arch": "open_clip:ViT-B-32"}, "set vlm.reference=text"),
    ({"model.target": "a.pt", "model.arch": '"open_clip:"', "vlm.reference": "text"}, "name the open_clip model config"),
    ({"model.target": "a.pt", "model.arch": "open_clip:ViT-B-32", "vlm.reference": "text", "model.projector": "512-512"},
     "leave model.projector=auto"),
])
def test_a_clip_audit_that_cannot_work_is_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(CLIP_SMOKE, [f"{key}={value}" for key, value in overrides.items()])


def test_an_unknown_or_malformed_open_clip_config_is_one_line_naming_it(files, tmp_path):
    _, paths = files
    (tmp_path / "bad.json").write_text(json.dumps({"embed_dim": 32}))
    # Configs open_clip would complete from the Hugging Face Hub: refused, never downloaded.
    (tmp_path / "hf_text.json").write_text(json.dumps({**TINY, "text_cfg": {"hf_model_name": "bert-base-uncased"}}))
    (tmp_path / "hub_tokenizer.json").write_text(json.dumps(
        {**TINY, "text_cfg": {**TINY["text_cfg"], "hf_tokenizer_name": "timm/ViT-B-16-SigLIP"}}))
    for arch, message in (("open_clip:NoSuchNet", "open_clip has no such model config"),
                          (f"open_clip:{tmp_path / 'bad.json'}", "is not an open_clip model config"),
                          (f"open_clip:{tmp_path}", "holds no open_clip_config.json"),
                          (f"open_clip:{tmp_path / 'hf_text.json'}", "Hugging Face model 'bert-base-uncased'"),
                          (f"open_clip:{tmp_path / 'hub_tokenizer.json'}", "tokenizer comes from the Hugging Face Hub")):
        config = load_config(CLIP_SMOKE, [f"model.target={paths['A']}", f"model.arch={arch}", "vlm.reference=text"])
        with pytest.raises(ConfigError, match=message) as error:
            load_outside(config, "A")
        assert "\n" not in str(error.value) and "model.arch" in str(error.value)


def test_the_command_line_without_reference_is_the_one_model_test_whatever_the_config_names():
    parse = _parser().parse_args
    assert 'model.reference=""' in _shorthand_overrides(parse(["audit", "--out", "o", "--target", "a.pt"]))
    for argv in (["--reference", "b.pt"], ["model.reference=b.pt"]):
        args = parse(["audit", "--out", "o", "--target", "a.pt", *argv])
        assert 'model.reference=""' not in _shorthand_overrides(args)


def test_a_relative_open_clip_config_path_is_recorded_absolute(files, monkeypatch):
    config, _ = files
    monkeypatch.chdir(config.parent)
    args = _parser().parse_args(["audit", "--out", "o", "--target", "a.pt", "--arch", f"open_clip:{config.name}"])
    assert f'model.arch={json.dumps(f"open_clip:{config.resolve()}")}' in _shorthand_overrides(args)
    assert absolute_arch("open_clip:ViT-B-32") == "open_clip:ViT-B-32" and absolute_arch("resnet18") == "resnet18"


def test_an_open_clip_module_object_embeds_as_open_clip_and_is_left_unchanged(files):
    config, paths = files
    model = _load(paths["A"])
    name = register_module(model)
    loaded = load_outside(load_config(CLIP_SMOKE, [f"model.target={name}", f"model.arch=open_clip:{config}",
                                                   "vlm.reference=text", *(f"{k}={v}" for k, v in SIZES.items())]), "A")
    images = torch.rand(3, 3, 32, 32)
    dejavu_normalised = (images - 0.5) / 0.25  # what dejavu's evaluation tensors hold
    openai_normalised = (images - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    tokens = loaded.text.tokenize(["a beach scene", "a farm scene with a disc-0"])
    with torch.no_grad():
        assert torch.allclose(loaded.encoder.embed(dejavu_normalised, "projector"), model.encode_image(openai_normalised),
                              atol=1e-5)
        assert torch.allclose(loaded.text(torch.from_numpy(tokens)), model.encode_text(torch.from_numpy(tokens)))
    assert model.visual.proj is not None, "the caller's module keeps its projection"
    assert loaded.encoder.layers == ["backbone", "projector"] and loaded.text.output_dim == TINY["embed_dim"]
    # model.std set alone: the model's own mean stays.
    std_only = load_outside(load_config(CLIP_SMOKE, [f"model.target={name}", f"model.arch=open_clip:{config}",
                                                     "vlm.reference=text", "model.std=[0.3,0.3,0.3]"]), "A")
    assert std_only.source["mean"] == pytest.approx(OPENAI_MEAN) and std_only.source["std"] == [0.3, 0.3, 0.3]
