"""Projector heads from a spec string such as ``"8192-8192-8192"`` (VICReg style)."""

from __future__ import annotations

from torch import nn

from dejavu.errors import ConfigError


def parse_projector_spec(spec: str) -> list[int]:
    """``"512-512-512"`` -> ``[512, 512, 512]``; raises ConfigError naming ``train.projector``.

    Example:
        >>> parse_projector_spec("2048-256")
        [2048, 256]
    """
    parts = str(spec).split("-")
    try:
        widths = [int(part) for part in parts]
    except ValueError:
        raise ConfigError(
            f"config key 'train.projector' = {spec!r}: expected layer widths joined by '-', e.g. '512-512-512'"
        ) from None
    if not widths or min(widths) < 1:
        raise ConfigError(f"config key 'train.projector' = {spec!r}: widths must be positive integers")
    return widths


def projector(in_features: int, spec: str) -> nn.Sequential:
    """Linear-BN-ReLU blocks then a final Linear, as in VICReg's expander.

    Example:
        >>> projector(128, "512-512").__len__()
        4
    """
    widths = parse_projector_spec(spec)
    layers: list[nn.Module] = []
    previous = in_features
    for width in widths[:-1]:
        layers += [nn.Linear(previous, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        previous = width
    layers.append(nn.Linear(previous, widths[-1]))
    return nn.Sequential(*layers)
