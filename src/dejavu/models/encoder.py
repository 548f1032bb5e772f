"""The SSL encoder (backbone + projector) and embedding at a named layer."""

from __future__ import annotations

import torch
from torch import nn

from dejavu.models.backbones import build_backbone
from dejavu.models.heads import projector

LAYERS = ("backbone", "projector")


class Encoder(nn.Module):
    """backbone -> projector. ``forward`` returns the projector output used by the SSL loss."""

    def __init__(self, backbone: str, widths: list[int], projector_spec: str):
        super().__init__()
        self.backbone = build_backbone(backbone, widths)
        self.projector = projector(self.backbone.out_features, projector_spec)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(images))

    def embed(self, images: torch.Tensor, layer: str) -> torch.Tensor:
        """Embedding at ``layer`` (``"backbone"`` or ``"projector"``, the paper's default)."""
        features = self.backbone(images)
        if layer == "backbone":
            return features
        if layer == "projector":
            return self.projector(features)
        raise ValueError(f"unknown layer {layer!r}; valid: {', '.join(LAYERS)}")


def build_encoder(config) -> Encoder:
    """Encoder for a :class:`dejavu.config.TrainConfig`."""
    return Encoder(config.backbone, list(config.widths), config.projector)
