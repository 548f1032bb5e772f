"""Weights as safetensors (no pickle), resume state loadable with ``weights_only=True``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dejavu.errors import CheckpointError
from dejavu.runs import atomic_path, config_diff


def save_weights(path: Path, module: torch.nn.Module, metadata: dict[str, Any]) -> None:
    """Atomically write ``module``'s state dict as safetensors with JSON metadata."""
    state = {key: value.detach().contiguous().cpu() for key, value in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"dejavu": json.dumps(metadata, sort_keys=True)})


def load_weights(path: Path, module: torch.nn.Module, expected: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load safetensors weights into ``module`` (strict); check metadata fields against ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = json.loads((handle.metadata() or {}).get("dejavu", "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint '{path}' is not a readable safetensors file ({exc})") from None
    _check_metadata(path, metadata, expected)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint '{path}' does not fit the configured model: {exc}") from None
    return metadata


def save_resume(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_resume(path: Path, expected: dict[str, Any]) -> dict[str, Any]:
    """Load a resume state without executing code (``weights_only=True``) and check it fits."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"resume state '{path}' is truncated or not a dejavu checkpoint ({exc})") from None
    if not isinstance(state, dict) or "meta" not in state:
        raise CheckpointError(f"resume state '{path}' is not a dejavu checkpoint (no 'meta')")
    _check_metadata(path, json.loads(state["meta"]), expected)
    return state


def _check_metadata(path: Path, found: dict[str, Any], expected: dict[str, Any] | None) -> None:
    for key, value in (expected or {}).items():
        if found.get(key) == value:
            continue
        if key == "recipe" and isinstance(found.get(key), str):
            # Name the first training key that differs rather than the whole recipe.
            differences = config_diff(json.loads(found[key]), json.loads(value), "train")
            # The method and network first: a method's own section differs only because the method does.
            differences.sort(key=lambda d: (d[0] not in ("train.method", "train.backbone"), d[1] is None or d[2] is None))
            if differences:
                field, was, now = differences[0]
                raise CheckpointError(
                    f"checkpoint '{path}' was written for {field} = {was!r}, but this run has {now!r}; "
                    "delete it or point --out elsewhere"
                )
        raise CheckpointError(
            f"checkpoint '{path}' was written for {key} = {found.get(key)!r}, but this run has {value!r}; "
            "delete it or point --out elsewhere"
        )
