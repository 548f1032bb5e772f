"""Projector heads from a spec such as ``"8192-8192-8192"`` (VICReg), BYOL's predictor, DINO's prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from dejavu.config.specs import parse_projector_spec


def projector(in_features: int, spec: str) -> nn.Sequential:
    """Linear-BN-ReLU blocks then a final Linear, as in VICReg's expander; one child per layer.

    One child per layer so that ``projector[:l]`` is the output of layer ``l`` (the guillotine study).

    Example:
        >>> head = projector(128, "512-512")
        >>> len(head), head[0](torch.randn(4, 128)).shape
        (2, torch.Size([4, 512]))
    """
    widths = parse_projector_spec(spec)
    layers: list[nn.Module] = []
    previous = in_features
    for width in widths[:-1]:
        layers.append(nn.Sequential(nn.Linear(previous, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)))
        previous = width
    layers.append(nn.Linear(previous, widths[-1]))
    return nn.Sequential(*layers)


def predictor(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """BYOL's predictor: Linear-BN-ReLU-Linear, applied to the online branch only.

    Example:
        >>> predictor(256, 4096, 256)(torch.randn(4, 256)).shape
        torch.Size([4, 256])
    """
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_features),
    )


class Prototypes(nn.Module):
    """DINO's last layer: L2-normalise, then a bias-free weight-normalised Linear to ``out_dim`` logits.

    With ``norm_last_layer`` the magnitude of every prototype is frozen at 1, so the logits are
    cosine similarities; DINO reports this stabilises training (the temperature sets the scale).

    Example:
        >>> Prototypes(256, 1000)(torch.randn(4, 256)).shape
        torch.Size([4, 1000])
    """

    def __init__(self, in_dim: int, out_dim: int, norm_last_layer: bool = True):
        super().__init__()
        self.last_layer = weight_norm(nn.Linear(in_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(features, dim=-1, p=2))
