import math

import numpy as np
import pytest
import torch

from dejavu.config import load_config
from dejavu.data.scenes import ScenesDataset
from dejavu.errors import CheckpointError
from dejavu.losses.vicreg import vicreg_loss
from dejavu.models.encoder import build_encoder
from dejavu.models.heads import parse_projector_spec, projector
from dejavu.train import loop
from dejavu.train.checkpoints import load_weights


def test_vicreg_matches_hand_computation():
    z_a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    z_b = torch.tensor([[1.0, 1.0], [0.0, 2.0], [2.0, 1.0]])
    # invariance: mean squared difference = (0 + 1 + 0 + 0 + 1 + 0) / 6
    invariance = 2 / 6

    def var_term(z):
        var = z.var(dim=0, unbiased=True).tolist()
        return sum(max(0.0, 1 - math.sqrt(v + 1e-4)) for v in var) / 2

    def cov_term(z):
        zc = (z - z.mean(0)).numpy()
        cov = zc.T @ zc / (len(z) - 1)
        return (cov[0, 1] ** 2 + cov[1, 0] ** 2) / 2

    expected = 25 * invariance + 25 * (var_term(z_a) + var_term(z_b)) / 2 + 1 * (cov_term(z_a) + cov_term(z_b))
    assert float(vicreg_loss(z_a, z_b)) == pytest.approx(expected, rel=1e-5)
    assert float(vicreg_loss(z_a, z_b)) == pytest.approx(float(vicreg_loss(z_b, z_a)), rel=1e-6)


def test_vicreg_terms_respond_to_their_weights():
    torch.manual_seed(0)
    z_a, z_b = torch.randn(16, 8), torch.randn(16, 8)
    only_sim = vicreg_loss(z_a, z_b, sim_weight=1, var_weight=0, cov_weight=0)
    assert float(only_sim) == pytest.approx(float(((z_a - z_b) ** 2).mean()), rel=1e-6)
    collapsed = torch.zeros(16, 8)
    # A collapsed embedding pays the full variance hinge (std ~ 0 -> 1 per dim).
    assert float(vicreg_loss(collapsed, collapsed, sim_weight=0, var_weight=1, cov_weight=0)) == pytest.approx(0.99, abs=0.01)


def test_projector_spec():
    assert parse_projector_spec("512-512-512") == [512, 512, 512]
    head = projector(16, "32-8")
    assert head(torch.randn(4, 16)).shape == (4, 8)
    for bad in ("", "512-", "a-b", "0-5"):
        with pytest.raises(Exception, match="train.projector"):
            parse_projector_spec(bad)


def _tiny(tmp_overrides=()):
    return load_config(None, [
        "train.widths=[4,8]", "train.projector=16-16", "train.batch_size=20", "train.epochs=4",
        "train.warmup_epochs=0", "train.resume_every_s=0", *tmp_overrides,
    ])


def _images(n=40):
    ds = ScenesDataset(n_classes=4, images_per_class=n // 4, image_size=32, seed=0)
    return ds.table().images


def test_training_lowers_the_loss_and_writes_weights(tmp_path):
    cfg = _tiny(["train.epochs=25", "train.lr=0.003"])
    path = loop.train_encoder(_images(), cfg.train, 16, seed=0, out_dir=tmp_path, data_fingerprint="d")
    history = __import__("json").loads((tmp_path / "history.json").read_text())["loss"]
    assert len(history) == 25
    assert np.mean(history[-5:]) < 0.95 * np.mean(history[:3])
    encoder = build_encoder(cfg.train)
    load_weights(path, encoder)
    assert not (tmp_path / "resume.pt").exists()


def test_resume_after_interruption_gives_identical_weights(tmp_path, monkeypatch):
    cfg = _tiny()
    images = _images()
    straight = loop.train_encoder(images, cfg.train, 16, seed=1, out_dir=tmp_path / "straight", data_fingerprint="d")

    calls = {"n": 0}
    real_view = loop.ssl_view

    def dying_view(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2 * 2 * 2:  # two views x two steps per epoch x two epochs, then "kill"
            raise KeyboardInterrupt
        return real_view(*args, **kwargs)

    monkeypatch.setattr(loop, "ssl_view", dying_view)
    with pytest.raises(KeyboardInterrupt):
        loop.train_encoder(images, cfg.train, 16, seed=1, out_dir=tmp_path / "killed", data_fingerprint="d")
    assert (tmp_path / "killed" / "resume.pt").exists()
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    monkeypatch.setattr(loop, "ssl_view", real_view)
    resumed = loop.train_encoder(images, cfg.train, 16, seed=1, out_dir=tmp_path / "killed", data_fingerprint="d")

    a, b = build_encoder(cfg.train), build_encoder(cfg.train)
    load_weights(straight, a)
    load_weights(resumed, b)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_resume_refuses_another_recipe_and_truncated_files(tmp_path, monkeypatch):
    cfg = _tiny()
    images = _images()
    real_view = loop.ssl_view
    calls = {"n": 0}

    def dying_view(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 8:
            raise KeyboardInterrupt
        return real_view(*args, **kwargs)

    monkeypatch.setattr(loop, "ssl_view", dying_view)
    with pytest.raises(KeyboardInterrupt):
        loop.train_encoder(images, cfg.train, 16, seed=1, out_dir=tmp_path, data_fingerprint="d")
    monkeypatch.setattr(loop, "ssl_view", real_view)
    other = _tiny(["train.lr=0.5"])
    with pytest.raises(CheckpointError, match="train.lr = 0.001, but this run has 0.5"):
        loop.train_encoder(images, other.train, 16, seed=1, out_dir=tmp_path, data_fingerprint="d")
    resume = tmp_path / "resume.pt"
    resume.write_bytes(resume.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or not a dejavu checkpoint"):
        loop.train_encoder(images, cfg.train, 16, seed=1, out_dir=tmp_path, data_fingerprint="d")


def test_weights_file_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_weights(bad, build_encoder(_tiny().train))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(tmp_path / "missing.safetensors", build_encoder(_tiny().train))


def test_same_seed_same_weights_different_seed_different(tmp_path):
    cfg = _tiny(["train.epochs=1"])
    images = _images()
    paths = [loop.train_encoder(images, cfg.train, 16, seed=s, out_dir=tmp_path / f"r{i}", data_fingerprint="d")
             for i, s in enumerate((3, 3, 4))]
    states = []
    for path in paths:
        enc = build_encoder(cfg.train)
        load_weights(path, enc)
        states.append(enc.state_dict())
    key = "projector.0.0.weight"
    assert torch.equal(states[0][key], states[1][key])
    assert not torch.equal(states[0][key], states[2][key])
