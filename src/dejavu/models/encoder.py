"""The SSL encoder (backbone + projector) and embedding at a named layer."""

from __future__ import annotations

import torch
from torch import nn

from dejavu.config.specs import check_layer, layer_names, parse_projector_spec
from dejavu.models.backbones import build_backbone
from dejavu.models.heads import projector

# Layers every encoder has; "projector1".."projectorL" (one per projector layer) come from the spec.
LAYERS = ("backbone", "projector")


class Encoder(nn.Module):
    """backbone -> projector. ``forward`` returns the projector output used by the SSL loss.

    Example:
        >>> encoder = Encoder("convnet", [8, 16], "32-32")
        >>> encoder.embed(torch.randn(2, 3, 32, 32), "projector1").shape
        torch.Size([2, 32])
    """

    def __init__(
        self,
        backbone: str,
        widths: list[int],
        projector_spec: str,
        input_size: int = 32,
        stem: str = "auto",
        patch_size: int = 0,
    ):
        super().__init__()
        self.projector_spec = projector_spec
        self.backbone = build_backbone(backbone, widths, input_size=input_size, stem=stem, patch_size=patch_size)
        self.projector = projector(self.backbone.out_features, projector_spec)
        self.out_features = parse_projector_spec(projector_spec)[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(images))

    @property
    def layers(self) -> list[str]:
        """The layers it embeds at (``attack.layer``'s valid values)."""
        return layer_names(self.projector_spec)

    def embed(self, images: torch.Tensor, layer: str) -> torch.Tensor:
        """Embedding at ``layer``: ``"backbone"``, ``"projector"`` (the paper's default) or ``"projectorN"``."""
        check_layer(layer, self.projector_spec)
        return self.head(self.backbone(images), layer)

    def head(self, features: torch.Tensor, layer: str) -> torch.Tensor:
        """The embedding at ``layer`` of the backbone's ``features``."""
        if layer == "backbone":
            return features
        depth = len(self.projector) if layer == "projector" else int(layer.removeprefix("projector"))
        # Layers past the requested one are skipped: guillotine embeddings need not pay for the full head.
        return self.projector[:depth](features)


def build_encoder(config, input_size: int = 32) -> Encoder:
    """Encoder for a :class:`dejavu.config.TrainConfig` and images of side ``input_size``."""
    # getattr: configs written before ``stem`` / ``patch_size`` existed still build.
    return Encoder(
        config.backbone,
        list(config.widths),
        config.projector,
        input_size=input_size,
        stem=getattr(config, "stem", "auto"),
        patch_size=getattr(config, "patch_size", 0),
    )
