"""Checkpoints written elsewhere: real files of every format and nesting, matched to real networks whose
outputs, once loaded, equal those of the network that wrote them."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from dejavu.errors import CheckpointError
from dejavu.models.checkpoint import file_provenance, read_checkpoint
from dejavu.models.encoder import Encoder
from dejavu.models.heads import projector
from dejavu.models.matching import load_projector, match_state, projector_spec, projector_weights


class Payload:
    """A class of the test module: what a pickled object from another codebase looks like to dejavu."""

    def __init__(self):
        self.weight = torch.ones(2)


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    net.fc = nn.Identity()
    _randomise_bn(net)
    return net.eval()


def _encoder(seed: int = 0, widths=(8, 16), spec: str = "32-32") -> Encoder:
    torch.manual_seed(seed)
    encoder = Encoder("convnet", list(widths), spec)
    _randomise_bn(encoder)
    return encoder.eval()


def _randomise_bn(module: nn.Module) -> None:
    """Running statistics other than 0 and 1, so that a BatchNorm not loaded changes the outputs."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
            layer.num_batches_tracked.fill_(7)


def _images(side: int = 32) -> torch.Tensor:
    return torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))


def _message(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def _load_into(fresh: nn.Module, path: Path, key: str = "", **kwargs) -> nn.Module:
    checkpoint = read_checkpoint(path, key)
    matched = match_state(checkpoint.state, fresh.state_dict(), checkpoint.path, **kwargs)
    fresh.load_state_dict(matched.state, strict=not matched.missing)
    return fresh.eval()


def _same_outputs(a: nn.Module, b: nn.Module, images: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.equal(a(images), b(images))


def _fresh_resnet() -> nn.Module:
    torch.manual_seed(123)
    net = torchvision.models.resnet18(weights=None)
    net.fc = nn.Identity()
    return net


# --- formats and nesting -----------------------------------------------------------------------------------


def test_plain_state_dict_loads_and_computes_the_same(tmp_path):
    source = _resnet()
    torch.save(source.state_dict(), tmp_path / "resnet.pth")
    checkpoint = read_checkpoint(tmp_path / "resnet.pth")
    assert (checkpoint.format, checkpoint.nested, checkpoint.ignored, checkpoint.module) == ("pickle", "", [], None)
    assert all(t.device.type == "cpu" for t in checkpoint.state.values())
    matched = match_state(checkpoint.state, _fresh_resnet().state_dict(), checkpoint.path, arch="resnet18")
    assert (matched.prefix, matched.dropped, matched.missing) == ("", [], [])
    loaded = _fresh_resnet()
    loaded.load_state_dict(matched.state, strict=True)
    assert _same_outputs(source, loaded.eval(), _images(64))


def test_ddp_wrapped_state_dict_under_state_dict_with_epoch(tmp_path):
    source = _resnet()
    state = {"module." + k: v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 12, "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "c.ckpt")
    checkpoint = read_checkpoint(tmp_path / "c.ckpt")
    assert checkpoint.nested == "state_dict"
    assert sorted(checkpoint.ignored) == ["epoch", "optimizer"]
    matched = match_state(checkpoint.state, _fresh_resnet().state_dict(), checkpoint.path)
    assert matched.prefix == "module."
    assert _same_outputs(source, _load_into(_fresh_resnet(), tmp_path / "c.ckpt"), _images(64))


def test_compiled_model_under_model_and_model_state_dict(tmp_path):
    source = _encoder()
    compiled = {"_orig_mod." + k: v for k, v in source.state_dict().items()}
    torch.save({"model": compiled, "step": 5}, tmp_path / "a.pt")
    torch.save({"model": {"state_dict": compiled, "lr": 0.1}}, tmp_path / "b.pt")
    assert read_checkpoint(tmp_path / "a.pt").nested == "model"
    deep = read_checkpoint(tmp_path / "b.pt")
    assert (deep.nested, deep.ignored) == ("model.state_dict", ["model.lr"])
    assert read_checkpoint(tmp_path / "b.pt", key="model.state_dict").nested == "model.state_dict"
    for name in ("a.pt", "b.pt"):
        assert _same_outputs(source, _load_into(_encoder(seed=9), tmp_path / name), _images())


def test_non_tensor_leaves_inside_a_state_dict_are_left_aside(tmp_path):
    source = _encoder()
    torch.save({**source.state_dict(), "epoch": 3, "arch": "convnet"}, tmp_path / "mixed.pth")
    checkpoint = read_checkpoint(tmp_path / "mixed.pth")
    assert (checkpoint.nested, sorted(checkpoint.ignored)) == ("", ["arch", "epoch"])
    assert set(checkpoint.state) == set(source.state_dict())


def test_dino_file_gives_the_teacher_unless_key_says_student(tmp_path):
    teacher, student = _encoder(seed=1), _encoder(seed=2)
    args = argparse.Namespace(arch="convnet", lr=0.0005)  # DINO saves its arguments; harmless to construct
    torch.save({"student": {"module." + k: v for k, v in student.state_dict().items()},
                "teacher": teacher.state_dict(), "epoch": 100, "args": args}, tmp_path / "dino.pth")
    checkpoint = read_checkpoint(tmp_path / "dino.pth")
    assert checkpoint.nested == "teacher"
    assert sorted(checkpoint.ignored) == ["args", "epoch", "student"]
    assert _same_outputs(teacher, _load_into(_encoder(seed=9), tmp_path / "dino.pth"), _images())
    assert read_checkpoint(tmp_path / "dino.pth", key="student").nested == "student"
    assert _same_outputs(student, _load_into(_encoder(seed=9), tmp_path / "dino.pth", key="student"), _images())
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(tmp_path / "dino.pth", key="ema")
    message = _message(excinfo)
    assert "'ema'" in message and "'student'" in message and "'teacher'" in message


def test_key_can_select_a_prefix_inside_a_flat_file(tmp_path):
    teacher, student = _encoder(seed=1), _encoder(seed=2)
    flat = {f"teacher.{k}": v for k, v in teacher.state_dict().items()}
    flat |= {f"student.{k}": v for k, v in student.state_dict().items()}
    save_file(flat, str(tmp_path / "both.safetensors"))
    checkpoint = read_checkpoint(tmp_path / "both.safetensors", key="student")
    assert checkpoint.nested == "student" and set(checkpoint.state) == set(student.state_dict())
    assert _same_outputs(student, _load_into(_encoder(seed=9), tmp_path / "both.safetensors", key="student"),
                         _images())


def test_no_state_dict_found_names_the_keys_and_model_key(tmp_path):
    source = _encoder()
    torch.save({"encoder_q": source.state_dict(), "encoder_k": source.state_dict(), "epoch": 1}, tmp_path / "m.pth")
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(tmp_path / "m.pth")
    message = _message(excinfo)
    assert "'encoder_q'" in message and "'epoch'" in message and "model.key=NAME" in message
    assert read_checkpoint(tmp_path / "m.pth", key="encoder_q").nested == "encoder_q"


def test_a_state_without_tensors_is_refused(tmp_path):
    torch.save({"state_dict": {}, "epoch": 1}, tmp_path / "empty_state.pth")
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(tmp_path / "empty_state.pth", key="state_dict")
    assert "'state_dict'" in _message(excinfo) and "no tensors" in _message(excinfo)


def test_safetensors_by_content_whatever_the_extension(tmp_path):
    source = _resnet()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "weights.bin"))
    checkpoint = read_checkpoint(tmp_path / "weights.bin")
    assert (checkpoint.format, checkpoint.nested) == ("safetensors", "")
    assert _same_outputs(source, _load_into(_fresh_resnet(), tmp_path / "weights.bin"), _images(64))


def test_legacy_torch_save_format(tmp_path):
    source = _encoder()
    torch.save({"state_dict": source.state_dict()}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    assert read_checkpoint(tmp_path / "old.pth").format == "pickle"
    assert _same_outputs(source, _load_into(_encoder(seed=9), tmp_path / "old.pth"), _images())


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_module_is_returned_and_computes(tmp_path):
    source = _encoder()
    source = nn.Sequential(source.backbone, source.projector).eval()
    torch.jit.script(source).save(str(tmp_path / "scripted.pt"))
    checkpoint = read_checkpoint(tmp_path / "scripted.pt")
    assert checkpoint.format == "torchscript" and checkpoint.module is not None
    assert set(checkpoint.state) == set(source.state_dict())
    with torch.no_grad():
        assert torch.equal(checkpoint.module(_images()), source(_images()))
    with pytest.raises(CheckpointError) as excinfo:
        read_checkpoint(tmp_path / "scripted.pt", key="teacher")
    assert "TorchScript" in _message(excinfo) and "model.key" in _message(excinfo)


# --- files refused -----------------------------------------------------------------------------------------


def test_pickled_objects_are_never_loaded(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": Payload()}, tmp_path / "objects.pth")
    torch.save(_encoder(), tmp_path / "whole_model.pth")
    for name in ("objects.pth", "whole_model.pth"):
        with pytest.raises(CheckpointError) as excinfo:
            read_checkpoint(tmp_path / name)
        message = _message(excinfo)
        assert name in message and "Python objects" in message and "could run code" in message
        assert "torch.save(model.state_dict(), path)" in message and "safetensors" in message
        assert "model.factory=" in message
    assert "Payload" in str(excinfo.value) or "Encoder" in str(excinfo.value)


def test_damaged_missing_and_wrong_files(tmp_path):
    (tmp_path / "garbage.pth").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "text.pth").write_text("not a checkpoint at all\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    torch.save({"w": torch.randn(4000)}, tmp_path / "full.pth")
    whole = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[: len(whole) // 2])
    torch.save({"w": torch.randn(4000)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    old = (tmp_path / "old.pth").read_bytes()
    (tmp_path / "cut_old.pth").write_bytes(old[: len(old) // 2])
    save_file({"w": torch.randn(4000)}, str(tmp_path / "full.safetensors"))
    tensors = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(tensors[: len(tensors) // 2])
    expected = {
        "missing.pth": "does not exist",
        "folder": "is a folder, not a checkpoint file",
        "empty.pth": "is empty (0 bytes)",
        "garbage.pth": "is not a checkpoint: not safetensors, TorchScript or a torch.save file",
        "text.pth": "is not a checkpoint: not safetensors, TorchScript or a torch.save file",
        "cut.pth": "is not a checkpoint: not safetensors, TorchScript or a torch.save file",
        "cut_old.pth": "is not a checkpoint: not safetensors, TorchScript or a torch.save file",
        "cut.safetensors": "damaged safetensors file",
    }
    for name, words in expected.items():
        with pytest.raises(CheckpointError) as excinfo:
            read_checkpoint(tmp_path / name)
        message = _message(excinfo)
        assert f"'{tmp_path / name}'" in message and words in message, (name, message)


def test_file_provenance_is_the_sha256_of_the_bytes(tmp_path):
    torch.save(_encoder().state_dict(), tmp_path / "a.pth")
    data = (tmp_path / "a.pth").read_bytes()
    found = file_provenance(tmp_path / "a.pth")
    assert found == {"path": str((tmp_path / "a.pth").resolve()), "bytes": len(data),
                     "sha256": hashlib.sha256(data).hexdigest()}
    with pytest.raises(CheckpointError, match="does not exist"):
        file_provenance(tmp_path / "nothing.pth")


# --- matching ----------------------------------------------------------------------------------------------


def test_backbone_prefix_and_dejavu_projector(tmp_path):
    source = _encoder()
    torch.save(source.state_dict(), tmp_path / "dejavu.pth")
    checkpoint = read_checkpoint(tmp_path / "dejavu.pth")
    fresh = _encoder(seed=9)
    matched = match_state(checkpoint.state, fresh.backbone.state_dict(), checkpoint.path)
    assert matched.prefix == "backbone."
    assert matched.dropped == sorted(k for k in source.state_dict() if k.startswith("projector."))
    fresh.backbone.load_state_dict(matched.state, strict=True)
    found = projector_weights(checkpoint.state, checkpoint.path)
    assert found is not None and found.prefix == "projector." and projector_spec(found) == "32-32"
    assert found.in_features == fresh.backbone.out_features
    head = projector(found.in_features, projector_spec(found))
    load_projector(found, head, checkpoint.path)
    features = torch.randn(5, found.in_features)
    with torch.no_grad():
        assert torch.equal(head.eval()(features), source.projector(features))
        assert torch.equal(head(fresh.backbone.eval()(_images())), source(_images()))


def _flat_head(widths: list[int], in_features: int) -> nn.Sequential:
    """A VICReg / SimCLR expander: Linear, BN, ReLU, ..., Linear as one flat Sequential."""
    layers: list[nn.Module] = []
    previous = in_features
    for width in widths[:-1]:
        layers += [nn.Linear(previous, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        previous = width
    layers.append(nn.Linear(previous, widths[-1]))
    head = nn.Sequential(*layers)
    _randomise_bn(head)
    return head.eval()


def test_flat_vicreg_projector_in_natural_order(tmp_path):
    torch.manual_seed(3)
    resnet = _resnet()
    head = _flat_head([24, 20, 16, 12, 8], 512)  # indices 0, 1, 3, 4, ..., 10, 12: "10" after "9"
    state = {f"module.backbone.{k}": v for k, v in resnet.state_dict().items()}
    state |= {f"module.projector.{k}": v for k, v in head.state_dict().items()}
    torch.save({"model": state, "epoch": 99}, tmp_path / "vicreg.pth")
    checkpoint = read_checkpoint(tmp_path / "vicreg.pth")
    matched = match_state(checkpoint.state, _fresh_resnet().state_dict(), checkpoint.path, arch="resnet18")
    assert matched.prefix == "module.backbone."
    assert all(k.startswith("module.projector.") for k in matched.dropped)
    found = projector_weights(checkpoint.state, checkpoint.path)
    assert found is not None and projector_spec(found) == "24-20-16-12-8" and found.in_features == 512
    assert [name for name, _, _ in found.layers][-3:] == ["projector.9", "projector.10", "projector.12"]
    built = projector(512, projector_spec(found))
    load_projector(found, built, checkpoint.path)
    features = torch.randn(6, 512)
    with torch.no_grad():
        assert torch.equal(built.eval()(features), head(features))


def test_torchvision_classifier_is_not_a_projector_and_not_an_error(tmp_path):
    torch.manual_seed(0)
    classifier = torchvision.models.resnet18(weights=None, num_classes=1000).eval()
    torch.save(classifier.state_dict(), tmp_path / "supervised.pth")
    checkpoint = read_checkpoint(tmp_path / "supervised.pth")
    assert projector_weights(checkpoint.state, checkpoint.path) is None
    matched = match_state(checkpoint.state, _fresh_resnet().state_dict(), checkpoint.path, arch="resnet18")
    assert (matched.prefix, matched.dropped) == ("", ["fc.bias", "fc.weight"])


def test_simclr_fc_projector_without_batchnorm_is_found_but_not_loaded(tmp_path):
    resnet = _resnet()
    mlp = nn.Sequential(nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 32))
    state = {f"backbone.{k}": v for k, v in resnet.state_dict().items()}
    state |= {f"backbone.fc.{k}": v for k, v in mlp.state_dict().items()}
    torch.save(state, tmp_path / "simclr.pth")
    checkpoint = read_checkpoint(tmp_path / "simclr.pth")
    matched = match_state(checkpoint.state, _fresh_resnet().state_dict(), checkpoint.path)
    assert matched.prefix == "backbone." and matched.dropped == sorted(k for k in state if ".fc." in k)
    found = projector_weights(checkpoint.state, checkpoint.path)
    assert found is not None and found.prefix == "backbone.fc." and projector_spec(found) == "64-32"
    with pytest.raises(CheckpointError) as excinfo:
        load_projector(found, projector(512, "64-32"), checkpoint.path)
    message = _message(excinfo)
    assert "Linear Linear" in message and "model.projector=none" in message


def test_dino_head_with_prototypes_is_not_taken_for_dejavus_projector(tmp_path):
    torch.manual_seed(4)
    mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8))
    state = {f"backbone.{k}": v for k, v in _encoder().backbone.state_dict().items()}
    state |= {f"head.mlp.{k}": v for k, v in mlp.state_dict().items()}
    state |= {"head.last_layer.weight_g": torch.ones(64, 1), "head.last_layer.weight_v": torch.randn(64, 8)}
    found = projector_weights(state, tmp_path / "dino.pth")
    assert found is not None and found.prefix == "head."
    with pytest.raises(CheckpointError) as excinfo:
        load_projector(found, projector(16, projector_spec(found)), tmp_path / "dino.pth")
    message = _message(excinfo)
    assert "'head.last_layer' is neither a Linear nor a BatchNorm" in message and "model.projector=none" in message


def test_projector_width_that_does_not_fit_the_backbone(tmp_path):
    source = _encoder()
    torch.save(source.state_dict(), tmp_path / "dejavu.pth")
    checkpoint = read_checkpoint(tmp_path / "dejavu.pth")
    found = projector_weights(checkpoint.state, checkpoint.path)
    with pytest.raises(CheckpointError) as excinfo:
        load_projector(found, projector(found.in_features + 1, "32-32"), checkpoint.path)
    assert "'projector.0.0.weight' has shape (32, 16)" in _message(excinfo)
    with pytest.raises(CheckpointError) as excinfo:
        load_projector(found, projector(found.in_features, "32-32-32"), checkpoint.path)
    assert "model.projector=32-32" in _message(excinfo)


def test_moco_takes_the_query_encoder():
    query, key = _encoder(seed=1), _encoder(seed=2)
    state = {f"encoder_q.{k}": v for k, v in query.backbone.state_dict().items()}
    state |= {f"encoder_k.{k}": v for k, v in key.backbone.state_dict().items()}
    matched = match_state(state, _encoder(seed=9).backbone.state_dict(), Path("moco.pth"))
    assert matched.prefix == "encoder_q."
    assert all(k.startswith("encoder_k.") for k in matched.dropped)


def test_missing_batchnorm_counters_are_filled_in(tmp_path):
    source = _encoder()
    state = {k: v for k, v in source.backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    fresh = _encoder(seed=9).backbone
    matched = match_state(state, fresh.state_dict(), tmp_path / "x.pth")
    assert matched.missing == [] and set(matched.state) == set(fresh.state_dict())
    fresh.load_state_dict(matched.state, strict=True)
    assert _same_outputs(source.backbone, fresh.eval(), _images())


def test_missing_keys_are_named_with_a_hint(tmp_path):
    source = _encoder().backbone.state_dict()
    partial = {f"encoder.{k}": v for k, v in source.items() if not k.startswith("features.5")}
    with pytest.raises(CheckpointError) as excinfo:
        match_state(partial, _encoder(seed=9).backbone.state_dict(), tmp_path / "p.pth", arch="convnet")
    message = _message(excinfo)
    assert "lacks 4 of the" in message and "'features.5.weight'" in message and "'features.5.bias'" in message
    assert "'encoder.features.0.weight'" in message and "'encoder.'" in message
    assert "model.strict=false" in message and "model.arch" in message


def test_missing_keys_with_strict_false_are_reported(tmp_path):
    source = _encoder().backbone
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("features.5")}
    fresh = _encoder(seed=9).backbone
    matched = match_state(partial, fresh.state_dict(), tmp_path / "p.pth", strict=False)
    assert matched.missing == ["features.5.weight", "features.5.bias", "features.5.running_mean",
                               "features.5.running_var"]
    fresh.load_state_dict(matched.state, strict=False)
    assert torch.equal(fresh.features[0].weight, source.features[0].weight)


def test_module_wrapping_the_network_gets_a_prefix_hint(tmp_path):
    bare = _encoder().backbone.state_dict()
    with pytest.raises(CheckpointError) as excinfo:
        match_state(bare, _encoder(seed=9).state_dict(), tmp_path / "bare.pth", what="the factory's module")
    message = _message(excinfo)
    assert "start with 'backbone.'" in message and "model.factory=" in message


def test_extra_keys_under_the_prefix(tmp_path):
    source = _encoder().backbone.state_dict()
    extra = {f"backbone.{k}": v for k, v in source.items()} | {"backbone.features.9.weight": torch.ones(3)}
    expected = _encoder(seed=9).backbone.state_dict()
    with pytest.raises(CheckpointError) as excinfo:
        match_state(extra, expected, tmp_path / "extra.pth")
    message = _message(excinfo)
    assert "'backbone.features.9.weight'" in message and "model.strict=false" in message
    matched = match_state(extra, expected, tmp_path / "extra.pth", strict=False)
    assert matched.dropped == ["backbone.features.9.weight"] and matched.missing == []


def test_another_architecture_is_named(tmp_path):
    with pytest.raises(CheckpointError) as excinfo:
        match_state(_encoder().backbone.state_dict(), _fresh_resnet().state_dict(), tmp_path / "c.pth",
                    arch="resnet18")
    message = _message(excinfo)
    assert "does not hold the weights of resnet18" in message and "'conv1.weight'" in message
    assert "'features.0.weight'" in message and "model.arch" in message and "model.factory=" in message


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    wide = _encoder(widths=(8, 32)).backbone.state_dict()
    with pytest.raises(CheckpointError) as excinfo:
        match_state(wide, _encoder(seed=9).backbone.state_dict(), tmp_path / "wide.pth", arch="convnet")
    message = _message(excinfo)
    assert "'features.4.weight' has shape (32, 8, 3, 3) in the checkpoint but (16, 8, 3, 3) in convnet" in message
    assert "model.arch" in message


def test_non_finite_and_integer_weights_are_refused(tmp_path):
    expected = _encoder(seed=9).backbone.state_dict()
    nan = dict(_encoder().backbone.state_dict())
    nan["features.0.weight"] = nan["features.0.weight"].clone()
    nan["features.0.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError) as excinfo:
        match_state(nan, expected, tmp_path / "nan.pth")
    assert "'features.0.weight' holds 1 non-finite value" in _message(excinfo)
    integer = dict(_encoder().backbone.state_dict())
    integer["features.1.weight"] = torch.ones(8, dtype=torch.int64)
    with pytest.raises(CheckpointError) as excinfo:
        match_state(integer, expected, tmp_path / "int.pth")
    assert "'features.1.weight' is stored as torch.int64" in _message(excinfo)


def test_half_precision_weights_load_with_a_warning(tmp_path, capsys):
    source = _encoder().backbone
    half = {k: v.half() if v.is_floating_point() else v for k, v in source.state_dict().items()}
    matched = match_state(half, _encoder(seed=9).backbone.state_dict(), tmp_path / "half.pth")
    assert matched.missing == []
    assert "lower precision" in capsys.readouterr().err

