"""Train the conditional decoder (DDPM, epsilon prediction) and draw from it (DDIM), with diffusers' schedulers.

Training is resumable: every ``checkpoint_every`` iterations the whole state (weights, EMA weights,
optimiser, the data-order generator, the iteration, the loss history) is written atomically, read back
with ``weights_only=True``; a continued training gives the same weights as one never interrupted, since
every random draw (batch rows, timesteps, noise) comes from one seeded generator that the state holds.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from dejavu import distributed as dist
from dejavu.errors import CheckpointError, DataError, ModelError
from dejavu.reconstruct.decoder import ConditionalDecoder, DecoderSettings
from dejavu.train.checkpoints import load_resume, save_resume


@dataclass
class Fitted:
    """The decoder to sample from (the EMA weights) and the training's loss per iteration."""

    decoder: ConditionalDecoder
    losses: list[float]


def _scheduler(settings: DecoderSettings):
    # The linear beta schedule of DDPM (Ho et al. 2020), 1e-4 to 0.02 over 1000 steps, scaled by 1000 / steps
    # as guided diffusion does for other step counts: fewer steps must still end in (nearly) pure noise, or
    # sampling, which starts from pure noise, begins where the training never was.
    from diffusers import DDPMScheduler  # half a second to import: only the reconstruction needs it

    scale = 1000 / settings.diffusion_steps
    return DDPMScheduler(num_train_timesteps=settings.diffusion_steps, beta_schedule="linear",
                         beta_start=1e-4 * scale, beta_end=min(0.02 * scale, 0.999),
                         prediction_type=settings.prediction)


TRAINING_FREE = ("iterations", "checkpoint_every", "guidance")  # settings a resume state need not match


def _meta(images: torch.Tensor, conditions: torch.Tensor, settings: DecoderSettings, seed: int) -> dict:
    """What a resume state must match: the settings, seed, images (a hash) and the conditions' shape. Not the
    iteration count, so that a longer training continues a shorter one, nor how often it saves, nor the sampling's
    guidance weight, which the training does not use; nor a hash of
    the conditions, which another device or batch size computes a few ulps apart (:func:`_same_conditions`)."""
    digest = hashlib.sha256(np.ascontiguousarray(images.numpy()).data)
    kept = {k: v for k, v in settings.as_dict().items() if k not in TRAINING_FREE}
    return {"settings": json.dumps(kept, sort_keys=True), "seed": seed, "data": digest.hexdigest(),
            "conditions": list(conditions.shape)}


PROBE_ROWS = 64  # condition rows a resume state keeps, to tell the same model's embeddings from another's


def _same_conditions(probe: torch.Tensor, conditions: torch.Tensor, state_path: Path, description: str) -> None:
    """Refuse a resume state whose conditions (its first rows, ``probe``) are not these, within float noise."""
    scale = float(conditions.abs().mean()) or 1.0
    if not torch.allclose(probe, conditions[:len(probe)], rtol=1e-3, atol=1e-3 * scale):
        raise CheckpointError(f"{description}: the resume state '{state_path}' was trained on other conditions (another "
                              "model's embeddings of the same images); delete it to train afresh")


def _check(images: torch.Tensor, conditions: torch.Tensor, settings: DecoderSettings) -> None:
    side = settings.image_size
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, side, side):
        raise DataError(f"the decoder trains on images of shape (N, 3, {side}, {side}) (reconstruct.image_size), "
                        f"found {tuple(images.shape)}")
    if conditions.ndim != 2 or len(conditions) != len(images) or not len(images):
        raise DataError(f"the decoder needs one condition row per image: {len(images)} images, conditions of "
                        f"shape {tuple(conditions.shape)}")
    if not torch.isfinite(conditions).all():
        raise DataError("the decoder's conditions (the model's embeddings) hold NaN or inf values")


def fit_decoder(images: torch.Tensor, conditions: torch.Tensor, settings: DecoderSettings, seed: int,
                state_path: Path | None = None, description: str = "decoder",
                device: torch.device | None = None) -> Fitted:
    """Train a decoder of ``conditions`` (N, D) into ``images`` (N, 3, s, s) in [-1, 1].

    The epsilon-prediction loss of DDPM on uniformly drawn timesteps, AdamW at ``lr``, EMA of the weights
    (``ema_decay``) for sampling. ``state_path``: resume there (see the module). The caller's random state
    is left alone."""
    settings.check()
    images, conditions = images.float().cpu(), conditions.float().cpu()
    _check(images, conditions, settings)
    device = torch.device(device) if device is not None else dist.device()
    meta = _meta(images, conditions, settings, seed)
    scheduler = _scheduler(settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = ConditionalDecoder(conditions.shape[1], settings)
        decoder.fit_standardisation(conditions)
        decoder = decoder.to(device)
        ema = AveragedModel(decoder, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay), use_buffers=True)
        optimizer = torch.optim.AdamW(decoder.parameters(), lr=settings.lr)
        generator = torch.Generator().manual_seed(seed)
        done, losses = 0, []
        if state_path is not None and Path(state_path).is_file():
            state = load_resume(Path(state_path), meta)
            _same_conditions(state["condition_probe"], conditions, state_path, description)
            decoder.load_state_dict(state["decoder"])
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            done, losses = int(state["iteration"]), state["losses"].tolist()
            if done > settings.iterations:
                raise CheckpointError(f"{description}: the resume state '{state_path}' is at iteration {done}, past "
                                f"reconstruct.iterations = {settings.iterations}; raise it or delete the state")

        def save() -> None:
            if state_path is not None and dist.is_main():
                save_resume(Path(state_path), {
                    "meta": json.dumps(meta, sort_keys=True), "decoder": decoder.state_dict(),
                    "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(), "iteration": done,
                    "condition_probe": conditions[:PROBE_ROWS].clone(),
                    "losses": torch.tensor(losses, dtype=torch.float64)})

        alphas = scheduler.alphas_cumprod.to(device)
        bar = tqdm(total=settings.iterations, initial=done, desc=description, unit="it", dynamic_ncols=True,
                   mininterval=1.0, disable=not dist.is_main())
        clock, start = time.perf_counter(), done
        batch = min(settings.batch_size, len(images))
        decoder.train()
        while done < settings.iterations:
            rows = torch.randint(0, len(images), (batch,), generator=generator)
            steps = torch.randint(0, settings.diffusion_steps, (batch,), generator=generator)
            noise = torch.randn((batch, *images.shape[1:]), generator=generator)
            x0, noise, steps = images[rows].to(device), noise.to(device), steps.to(device)
            a = alphas[steps].view(-1, 1, 1, 1)
            noised = a.sqrt() * x0 + (1 - a).sqrt() * noise
            target = noise if settings.prediction == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
            # Drawn only with dropout on: without it, the random stream (so the weights) is that of before the key.
            dropped = (torch.rand(batch, generator=generator) < settings.condition_dropout).to(device) \
                if settings.condition_dropout else None
            loss = nn.functional.mse_loss(decoder(noised, steps, conditions[rows].to(device), dropped), target)
            if not math.isfinite(loss.item()):
                raise ModelError(f"{description}: the training diverged (loss {loss.item()} at iteration "
                                 f"{done + 1}); lower reconstruct.lr (now {settings.lr:g})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ema.update_parameters(decoder)
            done += 1
            losses.append(loss.item())
            rate = (done - start) / max(time.perf_counter() - clock, 1e-9)
            bar.update(1)
            bar.set_postfix({"loss": f"{np.mean(losses[-50:]):.4f}", "it_s": f"{rate:.1f}"}, refresh=False)
            if done % settings.checkpoint_every == 0 or done == settings.iterations:
                save()
        bar.close()
    sampler = ema.module
    sampler.eval()
    return Fitted(decoder=sampler, losses=losses)


def _guided(decoder: ConditionalDecoder, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor, weight: float
            ) -> torch.Tensor:
    """The decoder's prediction, with classifier-free guidance of ``weight`` (1: the conditional one alone).
    The conditional and unconditional passes go through the network as one batch."""
    if weight == 1:
        return decoder(x, t, c)
    unconditioned = torch.arange(2 * len(x), device=x.device) >= len(x)
    conditional, free = decoder(torch.cat([x, x]), torch.cat([t, t]), torch.cat([c, c]), unconditioned).chunk(2)
    return free + weight * (conditional - free)


@torch.no_grad()
def sample(decoder: ConditionalDecoder, conditions: torch.Tensor, settings: DecoderSettings, steps: int,
           samples: int, seeds: list[int], batch_size: int = 64) -> torch.Tensor:
    """``samples`` images per condition row, (N, samples, 3, s, s) in [0, 1], by DDIM (eta 0) in ``steps``.

    Row i's starting noise comes from its own generator seeded ``seeds[i]``: a crop's reconstructions do
    not depend on which other crops are drawn with it."""
    if len(seeds) != len(conditions):
        raise ValueError(f"one seed per condition row: {len(seeds)} seeds for {len(conditions)} rows")
    device = next(decoder.parameters()).device
    side = settings.image_size
    noise = torch.stack([torch.randn((samples, 3, side, side), generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds]) if len(seeds) else torch.zeros((0, samples, 3, side, side))
    flat_noise = noise.reshape(-1, 3, side, side)
    flat_conditions = conditions.float().repeat_interleave(samples, dim=0)
    from diffusers import DDIMScheduler  # half a second to import: only the reconstruction needs it

    scheduler = DDIMScheduler.from_config(_scheduler(settings).config)
    scheduler.set_timesteps(steps)
    out = []
    for begin in range(0, len(flat_noise), batch_size):
        x = flat_noise[begin:begin + batch_size].to(device)
        c = flat_conditions[begin:begin + batch_size].to(device)
        for t in scheduler.timesteps:
            x = scheduler.step(_guided(decoder, x, t.expand(len(x)).to(device), c, settings.guidance), t, x,
                               eta=0.0).prev_sample
        out.append(((x.clamp(-1, 1) + 1) / 2).cpu())
    images = torch.cat(out) if out else torch.zeros((0, 3, side, side))
    return images.reshape(len(conditions), samples, 3, side, side)
