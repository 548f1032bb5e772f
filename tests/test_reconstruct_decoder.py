"""The reconstruction decoder (issue 15, part): a diffusers UNet conditioned on an embedding, DDPM training,
DDIM sampling, resumable training, safetensors weights."""

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dejavu.errors import CheckpointError, ConfigError, DataError
from dejavu.reconstruct.decoder import ConditionalDecoder, DecoderSettings, norm_groups
from dejavu.reconstruct.diffusion import _guided, fit_decoder, sample
from dejavu.train.checkpoints import load_weights, save_weights

COLOURS = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]])


def _data(n=64, side=8):
    """Images of one flat colour each (slightly noisy), conditioned on a one-hot code of the colour: only the
    condition says which colour to draw from pure noise."""
    which = torch.arange(n) % len(COLOURS)
    noise = 0.05 * torch.randn((n, 3, side, side), generator=torch.Generator().manual_seed(0))
    images = (COLOURS[which].view(n, 3, 1, 1) + noise).clamp(-1, 1)
    return images, torch.nn.functional.one_hot(which, len(COLOURS)).float()


def _settings(**overrides):
    base = dict(image_size=8, channels=[16, 32], attention_below=0, iterations=120, batch_size=32, lr=3e-3,
                ema_decay=0.0, diffusion_steps=50, checkpoint_every=1000)
    return DecoderSettings(**{**base, **overrides})


def test_the_decoder_learns_to_draw_what_its_condition_says():
    """Measured (2 cores, beside another job): 120 iterations in 26 s; every sample's mean colour within 0.24
    of its condition's colour on the [-1, 1] scale, per channel (0.4 asserted; grey would miss by 1)."""
    images, conditions = _data()
    fitted = fit_decoder(images, conditions, _settings(), seed=0)
    assert fitted.losses[-1] < 0.5 * fitted.losses[0]
    drawn = sample(fitted.decoder, torch.eye(len(COLOURS)), _settings(), steps=10, samples=2, seeds=[0, 1, 2, 3])
    assert drawn.shape == (4, 2, 3, 8, 8) and drawn.min() >= 0 and drawn.max() <= 1
    colour = drawn.mean(dim=(3, 4)) * 2 - 1  # (condition, sample, channel) on the [-1, 1] scale
    assert (colour - COLOURS[:, None, :]).abs().max() < 0.4
    # The condition decides: the same noise under another condition draws another colour.
    swapped = sample(fitted.decoder, torch.eye(len(COLOURS))[[1, 0, 3, 2]], _settings(), steps=10, samples=2,
                     seeds=[0, 1, 2, 3]).mean(dim=(3, 4)) * 2 - 1
    assert (swapped - COLOURS[[1, 0, 3, 2]][:, None, :]).abs().max() < 0.4
    # In pixels: every sample is nearer the training images of its condition than the training images at large.
    which = conditions.argmax(dim=1)
    pixels = drawn.flatten(2) * 2 - 1  # (condition, sample, pixels) on the images' scale
    distance = torch.cdist(pixels, images.flatten(1).expand(len(COLOURS), -1, -1))  # (condition, sample, image)
    own = torch.stack([distance[c][:, which == c].mean(dim=1) for c in range(len(COLOURS))])
    assert (own < distance.mean(dim=2)).all()


def test_guidance_extrapolates_from_the_learnt_unconditional_drawing(tmp_path):
    """A decoder trained with condition dropout draws the data's colours without its condition (the learnt null)
    and the condition's colour with it; guidance w gives exactly uncond + w (cond - uncond) of the two passes,
    and every guided sample is nearest its condition's colour. Measured (2 cores): 200 iterations, 4 s alone and
    25 s beside another job; the 16 unconditional samples spread over all 4 colours (3 asserted)."""
    images, conditions = _data()
    settings = _settings(iterations=200, condition_dropout=0.5, guidance=2.0)
    fitted = fit_decoder(images, conditions, settings, seed=0, state_path=tmp_path / "state.pt")
    decoder = fitted.decoder
    # The weight is the sampling's, not the training's: the finished state serves another one, training nothing.
    again = fit_decoder(images, conditions, _settings(iterations=200, condition_dropout=0.5, guidance=1.0), seed=0,
                        state_path=tmp_path / "state.pt")
    assert again.losses == fitted.losses
    x, t, c = torch.randn(4, 3, 8, 8), torch.tensor([5, 20, 35, 49]), torch.eye(len(COLOURS))
    with torch.no_grad():
        cond = decoder(x, t, c)
        free = decoder(x, t, c, torch.ones(4, dtype=torch.bool))
        assert torch.allclose(_guided(decoder, x, t, c, 2.0), free + 2.0 * (cond - free), atol=1e-5)
        assert torch.equal(_guided(decoder, x, t, c, 1.0), cond)
        # The null replaces the condition: what it predicts does not depend on the condition's value.
        assert torch.allclose(free, decoder(x, t, c[[1, 0, 3, 2]], torch.ones(4, dtype=torch.bool)))
    guided = sample(decoder, c, settings, steps=10, samples=2, seeds=[0, 1, 2, 3]).mean(dim=(3, 4)) * 2 - 1
    assert torch.cdist(guided.reshape(-1, 3), COLOURS).argmin(dim=1).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # Without a condition it draws the data's colours, not one: the nearest colour of 16 unconditional samples
    # (weight 0 leaves the unconditional pass alone, uncond + 0 (cond - uncond); the config allows 1 to 20).
    alone = dataclasses.replace(settings, guidance=0.0)
    drawn = sample(decoder, torch.zeros(16, len(COLOURS)), alone, steps=10, samples=1, seeds=list(range(16)))
    nearest = torch.cdist(drawn.mean(dim=(1, 3, 4)) * 2 - 1, COLOURS).argmin(dim=1)
    assert len(set(nearest.tolist())) >= 3


def test_sampling_is_seeded_per_row_whatever_the_batch():
    images, conditions = _data(16)
    decoder = fit_decoder(images, conditions, _settings(iterations=2), seed=0).decoder
    one = sample(decoder, conditions[:3], _settings(), steps=3, samples=2, seeds=[7, 8, 9], batch_size=64)
    split = sample(decoder, conditions[:3], _settings(), steps=3, samples=2, seeds=[7, 8, 9], batch_size=1)
    assert torch.allclose(one, split, atol=1e-5)
    other = sample(decoder, conditions[:3], _settings(), steps=3, samples=2, seeds=[7, 8, 10])
    assert torch.equal(one[:2], other[:2]) and not torch.allclose(one[2], other[2])


def test_a_continued_training_ends_where_an_uninterrupted_one_does(tmp_path):
    images, conditions = _data(16)
    whole = fit_decoder(images, conditions, _settings(iterations=6, checkpoint_every=2), seed=3,
                        state_path=tmp_path / "whole.pt")
    # Killed after iteration 4 (its last state), then the same command again: it continues from iteration 4.
    fit_decoder(images, conditions, _settings(iterations=4, checkpoint_every=2), seed=3, state_path=tmp_path / "cut.pt")
    continued = fit_decoder(images, conditions, _settings(iterations=6, checkpoint_every=2), seed=3,
                            state_path=tmp_path / "cut.pt")
    assert continued.losses == whole.losses and len(whole.losses) == 6
    for (name, a), (_, b) in zip(whole.decoder.state_dict().items(), continued.decoder.state_dict().items()):
        assert torch.equal(a, b), name
    # A finished state trains nothing more; a state of other data or settings is refused, never overwritten.
    again = fit_decoder(images, conditions, _settings(iterations=6, checkpoint_every=2), seed=3,
                        state_path=tmp_path / "whole.pt")
    assert again.losses == whole.losses
    with pytest.raises(CheckpointError, match="whole.pt"):
        fit_decoder(images, conditions, _settings(iterations=6, lr=1e-3), seed=3, state_path=tmp_path / "whole.pt")
    with pytest.raises(CheckpointError, match="past reconstruct.iterations = 4"):
        fit_decoder(images, conditions, _settings(iterations=4), seed=3, state_path=tmp_path / "whole.pt")
    # Embeddings computed elsewhere (another device, batch size) differ by float noise: the state still fits.
    # Another model's embeddings of the same images do not.
    nearly = fit_decoder(images, conditions * (1 + 1e-6), _settings(iterations=6, checkpoint_every=2), seed=3,
                         state_path=tmp_path / "whole.pt")
    assert nearly.losses == whole.losses
    with pytest.raises(CheckpointError, match="other conditions"):
        fit_decoder(images, conditions.roll(1, dims=1), _settings(iterations=6, checkpoint_every=2), seed=3,
                    state_path=tmp_path / "whole.pt")


KILLED_AT_STEP_5 = """
import os, signal, sys
import torch
sys.path.insert(0, sys.argv[2])
from test_reconstruct_decoder import _data, _settings
from dejavu.reconstruct.diffusion import fit_decoder

original, calls = torch.optim.AdamW.step, []
def step(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 5:  # inside iteration 5, after the state of iteration 4: a real SIGKILL, no cleanup runs
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)
torch.optim.AdamW.step = step
images, conditions = _data(16)
fit_decoder(images, conditions, _settings(iterations=6, checkpoint_every=2), seed=3, state_path=sys.argv[1])
"""


def test_a_decoder_killed_mid_training_resumes_to_the_uninterrupted_weights(tmp_path):
    state = tmp_path / "decoder.resume.pt"
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_STEP_5, str(state), str(Path(__file__).parent)],
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert int(torch.load(state, weights_only=True)["iteration"]) == 4  # the kill lost iteration 5 only
    images, conditions = _data(16)
    resumed = fit_decoder(images, conditions, _settings(iterations=6, checkpoint_every=2), seed=3, state_path=state)
    whole = fit_decoder(images, conditions, _settings(iterations=6, checkpoint_every=2), seed=3)
    assert len(resumed.losses) == 6 and resumed.losses == whole.losses
    for (name, a), (_, b) in zip(whole.decoder.state_dict().items(), resumed.decoder.state_dict().items()):
        assert torch.equal(a, b), name


def test_weights_round_trip_through_safetensors(tmp_path):
    images, conditions = _data(16)
    decoder = fit_decoder(images, conditions, _settings(iterations=2), seed=0).decoder
    save_weights(tmp_path / "decoder.safetensors", decoder, {"condition_width": 4})
    fresh = ConditionalDecoder(4, _settings())
    assert load_weights(tmp_path / "decoder.safetensors", fresh, {"condition_width": 4})["condition_width"] == 4
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 40])
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x, t, conditions[:2]), decoder(x, t, conditions[:2]))


def test_the_unet_is_diffusers_with_the_condition_in_the_timestep_embedding():
    decoder = ConditionalDecoder(10, _settings(channels=[16, 32, 32], attention_below=4))
    config = decoder.unet.config
    assert config.class_embed_type == "identity" and config.resnet_time_scale_shift == "scale_shift"
    assert decoder.project.in_features == 10 and decoder.project.out_features == 64
    # Levels at 8, 4 and 2 px (the last is not halved): attention at 4 px and below.
    assert config.down_block_types == ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
    assert config.up_block_types == ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    assert norm_groups([16, 32, 48]) == 16 and norm_groups([6, 9]) == 1 and norm_groups([]) == 0


@pytest.mark.parametrize("overrides, message", [
    ({"image_size": 10, "channels": [8, 8, 8]}, "reconstruct.image_size"),
    ({"iterations": 0}, "reconstruct.iterations"),
    ({"prediction": "x0"}, "reconstruct.prediction"),
    ({"ema_decay": 1.0}, "reconstruct.ema_decay"),
    ({"guidance": 2.0}, "reconstruct.guidance"),
    ({"guidance": 2.0, "condition_dropout": 1.0}, "reconstruct.condition_dropout"),
])
def test_bad_settings_name_their_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _settings(**overrides).check()


def test_bad_data_is_refused_before_training():
    images, conditions = _data(8)
    with pytest.raises(DataError, match="reconstruct.image_size"):
        fit_decoder(images[:, :, :4, :4], conditions, _settings(), seed=0)
    with pytest.raises(DataError, match="one condition row per image"):
        fit_decoder(images, conditions[:3], _settings(), seed=0)
    bad = conditions.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        fit_decoder(images, bad, _settings(), seed=0)


def test_conditions_follow_the_papers_recipe():
    from dejavu.reconstruct.conditions import attack_conditions, training_conditions

    backbone, projector = np.arange(6.0).reshape(3, 2), np.array([[9.0], [8.0], [7.0]])
    assert training_conditions(backbone, projector).tolist() == [[0, 1, 9], [2, 3, 8], [4, 5, 7]]
    # Crop 1's two nearest: x3, x1 -> mean of [4, 5] and [0, 1]; crop 2's: x2, x3 -> mean of [2, 3] and [4, 5].
    got = attack_conditions(np.array([["x3", "x1", "x2"], ["x2", "x3", "x1"]]), np.array(["x1", "x2", "x3"]),
                            backbone, np.array([[0.5], [-0.5]]), neighbours=2)
    assert got.dtype == np.float32
    assert got.tolist() == [[2.0, 3.0, 0.5], [3.0, 4.0, -0.5]]
    with pytest.raises(DataError, match="attack.k"):
        attack_conditions(np.array([["x1"]]), np.array(["x1"]), backbone[:1], np.array([[0.0]]), neighbours=5)
    with pytest.raises(DataError, match="one row of neighbours per crop"):
        attack_conditions(np.array([["x1"]]), np.array(["x1"]), backbone[:1], np.zeros((2, 1)))


def test_reconstruction_numbers_pool_directions_like_the_label_test():
    from dejavu.reconstruct.scoring import reconstruction_summary, sample_shares

    assert sample_shares(np.array([[2, 2, 1, 2], [0, 1, 1, 1]]), np.array([2, 1])).tolist() == [0.75, 0.75]
    with pytest.raises(DataError, match="3 crops"):
        sample_shares(np.zeros((2, 4)), np.zeros(3))
    directions = {
        "A": {"target_ok": [1, 1, 0, 0, 0.5, 0, 0, 0, 0, 0], "target_confidence": list(range(10, 0, -1)),
              "reference_ok": [0] * 8 + [1, 1], "reference_confidence": list(range(1, 11))},
        "B": {"target_ok": [1, 0, 0, 0, 0], "target_confidence": [5, 4, 3, 2, 1],
              "reference_ok": [0, 0, 0, 0, 1], "reference_confidence": [1, 2, 3, 4, 5]},
    }
    out = reconstruction_summary(directions, n_resamples=200, level=0.95, seed=0)
    # By hand: target (0.25 + 0.2) / 2, reference (0.2 + 0.2) / 2; each model's most confident 20 % (2 crops
    # of A, 1 of B) are all right; McNemar b = 1 + 1 + 0.5 + 1 = 3.5 -> 4, c = 2 + 1 = 3: p = 1.
    assert out["n"] == 15
    assert out["target_acc"] == pytest.approx(0.225) and out["reference_acc"] == pytest.approx(0.2)
    assert out["gap"] == pytest.approx(0.025) and out["mcnemar_p"] == 1.0
    assert out["target_acc_top20"] == 1.0 and out["reference_acc_top20"] == 1.0 and out["gap_top20"] == 0
    assert out["gap_ci95"][0] <= out["gap"] <= out["gap_ci95"][1]
    empty = reconstruction_summary({"A": {key: [] for key in directions["A"]}}, 10, 0.95, 0)
    assert empty["n"] == 0 and np.isnan(empty["gap"])
