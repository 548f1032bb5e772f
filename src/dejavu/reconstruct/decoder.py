"""The representation-conditioned diffusion decoder (RCDM, Bordes et al. 2022), built on diffusers.

A UNet2DModel whose timestep embedding receives a linear projection of the condition (an SSL embedding):
``class_embed_type="identity"`` adds whatever vector is passed as ``class_labels`` to the timestep
embedding, and ``resnet_time_scale_shift="scale_shift"`` makes every residual block's group norm scale
and shift from that sum (AdaGN), as in the guided-diffusion UNet the paper's decoder uses. The projection
is ours: a ``nn.Linear`` from the condition's width to the timestep embedding's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from dejavu.config.validation import check_decoder_levels, check_guidance
from dejavu.errors import ConfigError


@dataclass
class DecoderSettings:
    """The decoder's network and its training (``reconstruct.*`` keys of the same names)."""

    image_size: int = 32
    # Channels per resolution level (each level halves the side, the last one excepted).
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    # Self-attention at the levels whose side is at most this (0: none).
    attention_below: int = 8
    iterations: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    ema_decay: float = 0.999
    diffusion_steps: int = 1000
    # What the network predicts: "v_prediction" (Salimans & Ho 2022) weighs the noisiest steps, where only
    # the condition tells the object, far more than "epsilon" (DDPM, guided diffusion), so the decoder
    # learns to follow its condition in far fewer iterations.
    prediction: str = "v_prediction"
    # An atomic resume state every this many iterations (the work a kill may lose).
    checkpoint_every: int = 200
    # Classifier-free guidance (Ho & Salimans 2022), beyond RCDM: the share of training rows whose condition
    # is replaced by a learnt "no condition", and the weight w of sampling's cond + (w - 1) (cond - uncond);
    # w = 1 is plain conditional sampling (the paper's), w > 1 needs a decoder trained with dropout.
    condition_dropout: float = 0.0
    guidance: float = 1.0

    def check(self) -> None:
        groups = norm_groups(self.channels)
        check_decoder_levels(self.image_size, self.channels)
        if groups < 1:
            raise ConfigError(f"config key 'reconstruct.channels' = {self.channels}: every width must be a "
                              "positive multiple of a common group count (e.g. [32, 64, 64])")
        for key in ("iterations", "batch_size", "diffusion_steps", "checkpoint_every", "layers_per_block"):
            if getattr(self, key) < 1:
                raise ConfigError(f"config key 'reconstruct.{key}' = {getattr(self, key)}: expected at least 1")
        if self.prediction not in ("epsilon", "v_prediction"):
            raise ConfigError(f"config key 'reconstruct.prediction' = {self.prediction!r}: expected 'epsilon' or "
                              "'v_prediction'")
        if not 0 <= self.condition_dropout < 1:
            raise ConfigError(f"config key 'reconstruct.condition_dropout' = {self.condition_dropout}: expected a "
                              "value in [0, 1)")
        if not 1 <= self.guidance <= 20:
            raise ConfigError(f"config key 'reconstruct.guidance' = {self.guidance}: expected a value in [1, 20] "
                              "(1: no guidance)")
        check_guidance(self.guidance, self.condition_dropout)
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"config key 'reconstruct.ema_decay' = {self.ema_decay}: expected a value in [0, 1)")

    def as_dict(self) -> dict:
        return asdict(self)


def norm_groups(channels: list[int]) -> int:
    """The group norm's group count: the largest of 32, 16, 8, 4, 2, 1 dividing every width (0: none)."""
    if not channels or min(channels) < 1:
        return 0
    return next(g for g in (32, 16, 8, 4, 2, 1) if all(c % g == 0 for c in channels))


class ConditionalDecoder(nn.Module):
    """Predicts the noise of a noised image (N, 3, s, s) in [-1, 1] at timesteps (N,) given conditions (N, D)."""

    def __init__(self, condition_width: int, settings: DecoderSettings):
        super().__init__()
        settings.check()
        side, levels = settings.image_size, len(settings.channels)
        sides = [side // 2 ** i for i in range(levels)]
        attend = [0 < settings.attention_below and s <= settings.attention_below for s in sides]
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attend)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attend))
        time_width = 4 * settings.channels[0]
        self.condition_width = condition_width
        # Conditions are standardised per feature (statistics of the training conditions, set by the training):
        # SSL embeddings come at any scale, and a projection of standardised inputs learns at one learning rate.
        self.register_buffer("condition_mean", torch.zeros(condition_width))
        self.register_buffer("condition_scale", torch.ones(condition_width))
        self.project = nn.Linear(condition_width, time_width)
        # The learnt "no condition" of classifier-free guidance (in the projection's output space).
        self.null_condition = nn.Parameter(torch.zeros(time_width))
        from diffusers import UNet2DModel  # half a second to import: only the reconstruction builds decoders

        self.unet = UNet2DModel(
            sample_size=side, in_channels=3, out_channels=3, block_out_channels=tuple(settings.channels),
            down_block_types=down, up_block_types=up, layers_per_block=settings.layers_per_block,
            norm_num_groups=norm_groups(settings.channels), attention_head_dim=min(settings.channels),
            class_embed_type="identity", resnet_time_scale_shift="scale_shift", time_embedding_dim=time_width,
            add_attention=any(attend),
        )

    def forward(self, noised: torch.Tensor, timesteps: torch.Tensor, conditions: torch.Tensor,
                unconditioned: torch.Tensor | None = None) -> torch.Tensor:
        """``unconditioned``: bool (N,), rows drawn without their condition (classifier-free guidance)."""
        projected = self.project((conditions - self.condition_mean) / self.condition_scale)
        if unconditioned is not None:
            projected = torch.where(unconditioned[:, None], self.null_condition.to(projected.dtype), projected)
        return self.unet(noised, timesteps, class_labels=projected).sample

    @torch.no_grad()
    def fit_standardisation(self, conditions: torch.Tensor) -> None:
        """Set the per-feature mean and scale from the training conditions (N, D); a feature that barely
        varies (a collapsed dimension) is scaled by a hundredth of the mean spread, not blown up."""
        spread = conditions.std(dim=0) if len(conditions) > 1 else torch.ones(conditions.shape[1])
        floor = max(float(spread.mean()) * 1e-2, 1e-8)
        self.condition_mean.copy_(conditions.mean(dim=0))
        self.condition_scale.copy_(spread.clamp_min(floor))
