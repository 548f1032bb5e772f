"""The config's strings and numbers that name parts of a network, parsed and checked without building one.

``train.projector`` (``"512-512-512"``), ``attack.layer`` (``backbone``, ``projectorN``, ``projector``) and
``train.patch_size`` are checked by :func:`dejavu.config.validate` before any work; the models parse them
with these same functions (:mod:`dejavu.models` imports them from here, never the other way round).
"""

from __future__ import annotations

from dejavu.errors import ConfigError


# Far past the paper's projectors (8192-8192-8192): wider ones would not fit in memory.
MAX_PROJECTOR_LAYERS, MAX_PROJECTOR_WIDTH = 16, 65_536


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
    if len(widths) > MAX_PROJECTOR_LAYERS or max(widths) > MAX_PROJECTOR_WIDTH:
        raise ConfigError(
            f"config key 'train.projector' = {spec!r}: expected at most {MAX_PROJECTOR_LAYERS} layers of at most "
            f"{MAX_PROJECTOR_WIDTH:,} units (the paper's widest is 8192-8192-8192)"
        )
    return widths


def layer_names(projector_spec: str) -> list[str]:
    """Valid ``attack.layer`` values for a projector spec; ``"projector"`` is its last layer.

    Example:
        >>> layer_names("512-512")
        ['backbone', 'projector1', 'projector2', 'projector']
    """
    depth = len(parse_projector_spec(projector_spec))
    return ["backbone", *(f"projector{index}" for index in range(1, depth + 1)), "projector"]


def check_layer(layer: str, projector_spec: str) -> None:
    """Raise ConfigError naming ``attack.layer`` unless ``layer`` exists for this projector.

    Example:
        >>> check_layer("projector3", "512-512")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        dejavu.errors.ConfigError: config key 'attack.layer' = 'projector3': ...
    """
    valid = layer_names(projector_spec)
    if layer not in valid:
        raise ConfigError(
            f"config key 'attack.layer' = {layer!r}: unknown layer for train.projector = {projector_spec!r}; "
            f"valid: {', '.join(valid)} (projectorN is the output of projector layer N)"
        )


def resolve_patch_size(patch_size: int, input_size: int) -> int:
    """The ViT patch side: ``0`` -> 16 from 128 px up, else ``max(2, input_size // 8)``.

    Raises ConfigError when the patch does not tile ``input_size`` (torchvision requires it).

    Example:
        >>> resolve_patch_size(0, 32), resolve_patch_size(0, 64), resolve_patch_size(0, 224)
        (4, 8, 16)
    """
    if patch_size < 0:
        raise ConfigError(f"config key 'train.patch_size' = {patch_size}: expected 0 (auto) or a positive patch side")
    chosen = patch_size or (16 if input_size >= 128 else max(2, input_size // 8))
    if input_size % chosen:
        divisors = [d for d in range(2, input_size + 1) if input_size % d == 0] or [input_size]
        closest = min(divisors, key=lambda d: (abs(d - chosen), d))
        value = f"{patch_size} (auto -> {chosen})" if patch_size == 0 else f"{patch_size}"
        raise ConfigError(
            f"config key 'train.patch_size' = {value} does not divide 'data.input_size' = {input_size}; "
            f"set train.patch_size={closest} or data.input_size to a multiple of {chosen}"
        )
    return chosen
