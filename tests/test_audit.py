"""`dejavu audit` and `dejavu.audit`: models trained elsewhere, loaded from the common checkpoint layouts,
give the run's numbers exactly; broken encoders get no verdict; bad input is one line, before any embedding."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file

import dejavu
from dejavu.api import execute
from dejavu.cli import NO_VERDICT_EXIT, main
from dejavu.config import load_config
from dejavu.models.encoder import Encoder
from tests.conftest import FINISHED, TINY


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run dejavu trained itself: its folder (config, weights, metrics)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    execute(out, load_config(None, TINY), log=lambda message: None)
    return out


def _weights(run, model="A"):
    return run / "models" / model / "model.safetensors"


def _audit(out, target, reference, *extra, config=None):
    args = ["audit", "--out", str(out), "--target", str(target), "--reference", str(reference)]
    return main([*args, *(["--config", str(config)] if config else []), *extra])


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if ": error: " in line]
    assert len(errors) == 1, err
    return errors[0]


def test_audit_of_exported_weights_reproduces_the_run_exactly(trained, tmp_path, capsys):
    out = tmp_path / "audit"
    code = _audit(out, _weights(trained), _weights(trained, "B"), config=trained / "config.json")
    assert code in FINISHED
    assert json.loads((out / "metrics.json").read_text()) == json.loads((trained / "metrics.json").read_text())
    assert (out / "samples.csv").read_bytes() == (trained / "samples.csv").read_bytes()
    source = json.loads((out / "models" / "A" / "source.json").read_text())
    assert source["sha256"] == hashlib.sha256(_weights(trained).read_bytes()).hexdigest()
    assert source["bytes"] == _weights(trained).stat().st_size and source["format"] == "safetensors"
    assert source["prefix"] == "backbone." and source["projector"] == "32-32"
    report = (out / "report.html").read_text()
    assert "Models audited" in report and source["sha256"] in report and str(_weights(trained)) in report
    # The same command again: every stage is up to date (the checkpoints' digests are unchanged).
    assert _audit(out, _weights(trained), _weights(trained, "B")) == 0
    assert "[embed] up to date" in capsys.readouterr().out


def test_a_replaced_checkpoint_is_read_again(trained, tmp_path, capsys):
    out = tmp_path / "audit"
    target, reference = tmp_path / "A.safetensors", tmp_path / "B.safetensors"
    shutil.copy(_weights(trained), target)
    shutil.copy(_weights(trained, "B"), reference)
    assert _audit(out, target, reference, config=trained / "config.json") == 0
    capsys.readouterr()
    shutil.copy(_weights(trained, "B"), target)  # other bytes at the same path: read again, and all after it
    assert _audit(out, target, reference) == 0
    log = capsys.readouterr().out
    assert "[train_A] target:" in log and "[embed] done" in log and "[train_B] up to date" in log
    source = json.loads((out / "models" / "A" / "source.json").read_text())
    assert source["sha256"] == hashlib.sha256(_weights(trained, "B").read_bytes()).hexdigest()
    assert json.loads((out / "metrics.json").read_text())["gap"] == 0  # the same model on both sides


def test_the_python_api_takes_a_module_object(trained, tmp_path):
    encoder = Encoder("convnet", [4, 8], "32-32", input_size=16)
    encoder.load_state_dict(load_file(str(_weights(trained))))
    result = dejavu.audit(target=encoder, reference=_weights(trained, "B"), out=tmp_path / "api",
                          config=trained / "config.json", **{"metrics.bootstrap": 50})
    expected = json.loads((trained / "metrics.json").read_text())
    assert result.gap == pytest.approx(expected["gap"], abs=0) and result.passed
    assert result.report.is_file() and result.tables["samples.csv"].is_file()
    assert json.loads((result.out / "models" / "A" / "source.json").read_text())["format"] == "module object"
    again = dejavu.result_of(result.out)
    assert again.metrics == result.metrics and "gap=" in repr(result)


def test_trainer_layouts_and_a_factory_give_the_same_numbers(trained, tmp_path):
    """DDP + Lightning-style nesting ({'state_dict': {'module.encoder.…'}}), torch.compile's prefix, a
    factory returning dejavu's encoder: the same weights, so the same metrics."""
    expected = json.loads((trained / "metrics.json").read_text())
    a, b = load_file(str(_weights(trained))), load_file(str(_weights(trained, "B")))
    nested_a, nested_b = tmp_path / "a.pth", tmp_path / "b.ckpt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in a.items()}, "epoch": 3}, nested_a)
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in b.items()}, "optimizer": {"lr": 0.1}}, nested_b)
    out = tmp_path / "layouts"
    assert _audit(out, nested_a, nested_b, config=trained / "config.json") == 0
    assert json.loads((out / "metrics.json").read_text()) == expected
    source = json.loads((out / "models" / "A" / "source.json").read_text())
    assert source["nested"] == "state_dict" and source["prefix"] == "module.backbone."

    (tmp_path / "lab_models.py").write_text(
        "from dejavu.models.encoder import Encoder\n\n"
        "def tiny():\n    return Encoder('convnet', [4, 8], '32-32', input_size=16)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        out = tmp_path / "factory"
        assert _audit(out, _weights(trained), _weights(trained, "B"), "model.factory=lab_models:tiny",
                      config=trained / "config.json") == 0
    finally:
        sys.path.remove(str(tmp_path))
    assert json.loads((out / "metrics.json").read_text()) == expected
    assert json.loads((out / "models" / "B" / "source.json").read_text())["arch"] == "factory lab_models:tiny"


def test_a_torchvision_resnet_under_module_prefix_and_torchscript(trained, tmp_path):
    """A ResNet-18 saved as {'state_dict': {'module.…'}} (its classifier dropped and reported), and a
    TorchScript backbone: audited end to end to a report."""
    paths = {}
    for model, seed in (("A", 1), ("B", 2)):
        torch.manual_seed(seed)
        net = torchvision.models.resnet18(weights=None, num_classes=7)
        paths[model] = tmp_path / f"resnet_{model}.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, paths[model])
    out = tmp_path / "resnet"
    # (train.stem=auto: the 7 x 7 first convolution says it is torchvision's ImageNet stem, at 16 px too)
    code = _audit(out, paths["A"], paths["B"], "model.arch=resnet18", "attack.layer=backbone",
                  config=trained / "config.json")
    assert code in (*FINISHED, NO_VERDICT_EXIT) and (out / "report.html").is_file()
    source = json.loads((out / "models" / "A" / "source.json").read_text())
    assert source["prefix"] == "module." and "module.fc.weight" in source["dropped"]
    assert source["widths"] == {"backbone": 512} and source["arch"] == "resnet18"

    for model in ("A", "B"):
        backbone = Encoder("convnet", [4, 8], "32-32", input_size=16)
        backbone.load_state_dict(load_file(str(_weights(trained, model))))
        torch.jit.script(backbone.backbone.eval()).save(str(tmp_path / f"{model}.pt"))
    out = tmp_path / "script"
    assert _audit(out, tmp_path / "A.pt", tmp_path / "B.pt", "attack.layer=backbone",
                  config=trained / "config.json") in (*FINISHED, NO_VERDICT_EXIT)
    assert json.loads((out / "models" / "A" / "source.json").read_text())["format"] == "torchscript"
    # At the backbone the scripted networks embed exactly as the trained ones do there.
    reference = tmp_path / "backbone_run"
    execute(reference, load_config(None, [*TINY, "attack.layer=backbone"]), log=lambda message: None)
    assert json.loads((out / "metrics.json").read_text())["gap"] == json.loads(
        (reference / "metrics.json").read_text())["gap"]


@pytest.mark.parametrize("breakage", ["half_the_keys", "collapsed", "normalisation"])
def test_a_broken_encoder_gets_no_verdict(trained, tmp_path, breakage, capsys):
    """A checkpoint that loads but makes a broken encoder trips the sanity gates (exit 3, no verdict)."""
    state = load_file(str(_weights(trained)))
    extra = []
    if breakage == "half_the_keys":
        backbone = sorted(key for key in state if key.startswith("backbone."))
        state = {key: value for key, value in state.items() if key not in backbone[1::2]}
        extra = ["model.strict=false"]
    elif breakage == "collapsed":
        state = {key: (torch.zeros_like(v) if key.startswith("projector.1.") else v) for key, v in state.items()}
    else:
        extra = ["model.mean=[40,40,40]", "model.std=[0.001,0.001,0.001]"]
    target = tmp_path / "broken.safetensors"
    save_file(state, str(target))
    reference = _weights(trained, "B")
    code = _audit(tmp_path / "audit", target, reference, *extra, config=trained / "config.json")
    output = capsys.readouterr()
    assert code == NO_VERDICT_EXIT, output.err[-2000:]
    metrics = json.loads((tmp_path / "audit" / "metrics.json").read_text())
    assert not metrics["sanity"]["passed"] and metrics["outcomes"]["image"]["decision"] == "no_verdict"


class Opaque:
    """A class of this test module: weights_only refuses to build it (it is no tensor, no plain container)."""


def _pickle_with_object(path):
    torch.save({"state_dict": {}, "args": Opaque()}, path)


BAD = {
    "missing": (lambda path, state: None, [], "does not exist"),
    "not_a_checkpoint": (lambda path, state: path.write_bytes(b"\x00garbage" * 50), [], "not a checkpoint"),
    "pickled_object": (lambda path, state: _pickle_with_object(path), [], "could run code"),
    "missing_keys": (lambda path, state: torch.save({k: v for k, v in state.items() if "features.0" not in k}, path),
                     [], "lacks 1 of the 10 weights"),
    "shape": (lambda path, state: save_file({**state, "backbone.features.0.weight": torch.zeros(4, 3, 5, 5)},
                                            str(path)), [], "(4, 3, 5, 5)"),
    "architecture": (lambda path, state: save_file(state, str(path)), ["model.arch=resnet18"], "resnet18"),
    "image_size": (lambda path, state: save_file(state, str(path)), ["model.image_size=1"], "cannot embed 1 x 1 images"),
    "vit_weights": (lambda path, state: torch.save(torchvision.models.vit_b_16(weights=None).state_dict(), path),
                    ["model.arch=vit_tiny", "model.image_size=32"], "vit_tiny"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_before_any_embedding(trained, tmp_path, case, capsys):
    make, extra, words = BAD[case]
    path = tmp_path / "target.pth"
    make(path, load_file(str(_weights(trained))))
    out = tmp_path / "audit"
    assert _audit(out, path, _weights(trained, "B"), *extra, config=trained / "config.json") == 2
    line = _error(capsys)
    assert words in line, line
    assert not (out / "embeddings").exists()


def test_models_of_different_networks_and_a_trained_folder_are_refused(trained, tmp_path, capsys):
    torch.manual_seed(0)
    other = Encoder("convnet", [4, 8], "16-16", input_size=16)
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    out = tmp_path / "audit"
    assert _audit(out, _weights(trained), path, config=trained / "config.json") == 2
    assert "the target embeds at projector to 32 dimensions but the reference to 16" in _error(capsys)
    assert not (out / "embeddings").exists()
    assert _audit(trained, _weights(trained), _weights(trained, "B")) == 2
    assert "holds models dejavu trained" in _error(capsys)
    # A target alone is the one-model test (tests/test_one_model.py); a reference alone is refused.
    assert load_config(None, [*TINY, f"model.target={_weights(trained)}"]).model.one_model
    with pytest.raises(dejavu.api.ConfigError, match="model.target"):
        load_config(None, [*TINY, f"model.reference={_weights(trained, 'B')}"])


def test_a_pickle_is_never_loaded_unsafely(tmp_path):
    path = tmp_path / "evil.pth"
    _pickle_with_object(path)
    from dejavu.errors import CheckpointError
    from dejavu.models.checkpoint import read_checkpoint
    with pytest.raises(CheckpointError, match="could run code"):
        read_checkpoint(path)


def test_a_timm_model_by_name_from_a_local_file(trained, tmp_path):
    """model.arch=timm:NAME builds the network without downloading anything; the weights are the file's
    ({'model': ...}, its classifier dropped), and it embeds as the timm module itself does."""
    import timm
    paths = {}
    for model, seed in (("A", 3), ("B", 4)):
        torch.manual_seed(seed)
        net = timm.create_model("resnet18", pretrained=False, num_classes=5)
        paths[model] = tmp_path / f"timm_{model}.pth"
        torch.save({"model": net.state_dict(), "epoch": 10}, paths[model])
    out = tmp_path / "timm"
    assert _audit(out, paths["A"], paths["B"], "model.arch=timm:resnet18", "attack.layer=backbone",
                  config=trained / "config.json") in (*FINISHED, NO_VERDICT_EXIT)
    source = json.loads((out / "models" / "A" / "source.json").read_text())
    assert source["nested"] == "model" and sorted(source["dropped"]) == ["fc.bias", "fc.weight"]
    assert source["widths"] == {"backbone": 512} and source["arch"] == "timm:resnet18"
    from dejavu.models.outside import load_outside
    config = load_config(None, [
        *TINY, f"model.target={paths['A']}", f"model.reference={paths['B']}", "model.arch=timm:resnet18",
        "attack.layer=backbone"])
    net = timm.create_model("resnet18", pretrained=False, num_classes=5)
    net.load_state_dict(torch.load(paths["A"], weights_only=True)["model"])
    net.reset_classifier(0)
    net.eval()
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(load_outside(config, "A").encoder.embed(images, "backbone"), net(images))
