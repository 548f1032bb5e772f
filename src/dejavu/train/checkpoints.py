"""Weights as safetensors (no pickle), resume state loadable with ``weights_only=True``."""

from __future__ import annotations

import json
import pickle
import sys
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
    if not isinstance(metadata, dict):
        raise CheckpointError(f"checkpoint '{path}' has damaged metadata (not a JSON object)")
    _check_metadata(path, metadata, expected)
    check_tensors(path, state, module.state_dict())
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint '{path}' does not fit the configured model: {_first_line(exc)}") from None
    return metadata


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400]


def check_tensors(path: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """The weights' dtypes and values before they are loaded into ``expected``'s module.

    ``load_state_dict`` casts silently: integers destroy weights, a lower precision rounds them. A weight
    that is not finite makes every embedding NaN, and the neighbours then vote for arbitrary classes."""
    lossy = []
    for key, tensor in state.items():
        target = expected.get(key)
        if target is None or not target.is_floating_point():
            continue  # unexpected keys are named by load_state_dict; integer buffers (BatchNorm counts) stay
        if not tensor.is_floating_point():
            raise CheckpointError(
                f"checkpoint '{path}': '{key}' is stored as {tensor.dtype}, not as floating-point weights; casting "
                "would destroy them: re-export the weights as float32"
            )
        if torch.finfo(tensor.dtype).bits < torch.finfo(target.dtype).bits:
            lossy.append(f"'{key}' ({tensor.dtype})")
        if not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"checkpoint '{path}': '{key}' holds {bad} non-finite value{'s' if bad > 1 else ''} (NaN or inf): "
                "the training diverged or the file was damaged; retrain the model (e.g. with a lower train.lr)"
            )
    if lossy:
        print(f"dejavu: warning: checkpoint '{path}': {len(lossy)} tensors of lower precision are cast up (their "
              f"values keep it): {', '.join(lossy[:3])}{', ...' if len(lossy) > 3 else ''}", file=sys.stderr)


def save_resume(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_resume(path: Path, expected: dict[str, Any]) -> dict[str, Any]:
    """Load a resume state without executing code (``weights_only=True``) and check it fits.

    A file the safe loader refuses (it holds Python objects: not written by dejavu, or tampered with) is
    never loaded another way."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # not a pickle of objects: garbage, or cut short
            raise CheckpointError(
                f"resume state '{path}' is truncated or not a dejavu checkpoint (unreadable pickle); delete it to "
                "train this model from the start"
            ) from None
        raise CheckpointError(
            f"resume state '{path}' holds Python objects that dejavu never writes, so it is not loaded (loading it "
            "could run code); delete it to train this model from the start"
        ) from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"resume state '{path}' is truncated or not a dejavu checkpoint ({type(exc).__name__}); delete it to "
            "train this model from the start"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("meta"), str):
        raise CheckpointError(f"resume state '{path}' is not a dejavu checkpoint (no 'meta'); delete it to train "
                              "this model from the start")
    try:
        meta = json.loads(state["meta"])
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict):
        raise CheckpointError(f"resume state '{path}' has damaged metadata (not a JSON object); delete it to train "
                              "this model from the start")
    _check_metadata(path, meta, expected)
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
