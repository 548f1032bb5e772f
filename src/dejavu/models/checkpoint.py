"""Checkpoint files written elsewhere, read without running their code: safetensors, TorchScript, or a
``torch.save`` file loaded with ``weights_only=True``.

The format is told by the content, never by the extension (``.pth``, ``.pt``, ``.ckpt`` and ``.bin`` are
used for all three):

- safetensors: an 8-byte header length, then a JSON header;
- TorchScript: a zip archive with ``constants.pkl`` and ``code/`` (``torch.jit.load`` builds the scripted
  module from TorchScript code and never unpickles arbitrary classes);
- anything else: ``torch.load(path, map_location="cpu", weights_only=True)``, zip or legacy pickle. A file
  that this refuses holds Python objects (a pickled model, a custom class) and is not loaded another way.

Where the weights are inside a ``torch.save`` file (the nesting rule):

1. A dict whose values are all tensors is the state dict.
2. With ``model.key`` (a dotted path such as ``student`` or ``model.state_dict``) the weights are exactly
   there; a path that ends inside a flat state dict selects the tensors under that prefix (``teacher`` in a
   file of ``teacher.*`` keys), with the prefix removed.
3. Otherwise the first present of ``state_dict``, ``model``, ``teacher``, ``student``, ``module``,
   ``network``, ``encoder``, ``backbone``, ``net``, ``weights``, ``params`` whose value is a dict, again and
   again (``{"model": {"state_dict": {...}}}`` is found). A DINO file holding both ``teacher`` and
   ``student`` gives the teacher: DINO evaluates the teacher; ``model.key=student`` takes the other.
4. A dict with no such entry but with tensors is the state dict; its other values (an ``epoch`` mixed in)
   are left aside.

Entries left aside (``optimizer``, ``epoch``, ...) are listed in :attr:`Checkpoint.ignored` as dotted
paths from the top of the file. Tensors are returned on the CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from dejavu.errors import CheckpointError, os_error_message

# Containers of the weights in the files of common SSL codebases, most specific first; "teacher" before
# "student" because DINO (and iBOT, DINOv2) evaluate the teacher.
NESTED_KEYS = ("state_dict", "model", "teacher", "student", "module", "network", "encoder", "backbone", "net",
               "weights", "params")
# Harmless to construct, and in the files of many training scripts (DINO saves its argparse arguments).
SAFE_GLOBALS = [argparse.Namespace]
CHUNK = 1 << 20
FIX = ("re-save it with torch.save(model.state_dict(), path) or as safetensors, or build the network with "
       "model.factory=package.module:function")


# What each format code of :attr:`Checkpoint.format` (and of ``source.json``) is, for people: a torch.save
# file is read with ``weights_only=True``, so no code of it runs; a TorchScript module runs its own code.
FORMAT_LABELS = {"pickle": "torch.save file (weights only)", "safetensors": "safetensors",
                 "torchscript": "TorchScript module (runs its code)", "module object": "module object (in memory)"}


def format_label(code: str) -> str:
    """``code`` (a :attr:`Checkpoint.format`) in words; an unknown code as it is."""
    return FORMAT_LABELS.get(code, code)


@dataclass
class Checkpoint:
    """What a checkpoint file holds: its format, the flat state dict, the TorchScript module if any."""

    path: Path
    format: str  # "safetensors" | "pickle" (torch.save) | "torchscript"
    state: dict[str, torch.Tensor]
    module: torch.nn.Module | None = None
    nested: str = ""  # where the weights were inside the file: "" (top level), "state_dict", "model.state_dict"
    ignored: list[str] = field(default_factory=list)


def read_checkpoint(path: str | Path, key: str = "") -> Checkpoint:
    """The weights in ``path`` by the nesting rule of this module; ``key`` is ``model.key``."""
    path = Path(path)
    size = _check_file(path)
    head = _read_head(path)
    if _is_safetensors(head, size):
        state = _load_safetensors(path)
        return _checkpoint(path, "safetensors", state, key)
    if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint '{path}' is not a checkpoint: not safetensors, TorchScript or a torch.save "
                              "file (a zip archive without its directory: cut short); copy the file again")
    if head.startswith(b"PK\x03\x04") and _is_torchscript(path):
        if key:
            raise CheckpointError(f"checkpoint '{path}' is a TorchScript module, which is used whole; "
                                  f"model.key = {key!r} does not apply to it: remove model.key")
        module = _load_torchscript(path)
        state = {name: tensor.detach() for name, tensor in module.state_dict().items()}
        if not state:
            raise CheckpointError(f"checkpoint '{path}' is a TorchScript module without weights (no tensors in "
                                  "its state_dict); export the trained module, not an empty one")
        return Checkpoint(path, "torchscript", state, module)
    loaded = _torch_load(path)
    return _checkpoint(path, "pickle", loaded, key)


def file_provenance(path: str | Path) -> dict[str, Any]:
    """The file as the report records it: absolute path, size in bytes and SHA-256 (read in 1 MiB chunks)."""
    path = Path(path)
    size = _check_file(path)
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise CheckpointError(f"checkpoint '{path}': {os_error_message(exc)}") from None
    return {"path": str(path.resolve()), "bytes": size, "sha256": digest.hexdigest()}


def _check_file(path: Path) -> int:
    if path.is_dir():
        raise CheckpointError(f"checkpoint '{path}' is a folder, not a checkpoint file; give the weights file "
                              "inside it (e.g. model.pth, model.safetensors)")
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' does not exist; check the path (relative paths are from the "
                              "current folder)")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"checkpoint '{path}': {os_error_message(exc)}") from None
    if size == 0:
        raise CheckpointError(f"checkpoint '{path}' is empty (0 bytes): it was cut short while written or "
                              "copied; copy it again")
    return size


def _read_head(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(16)
    except OSError as exc:
        raise CheckpointError(f"checkpoint '{path}': {os_error_message(exc)}") from None


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 0 < length <= size - 8 and head[8:9] == b"{"


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint '{path}' is a damaged safetensors file ({_first_line(exc)}); copy it "
                              "again or re-export it") from None


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False  # torch.load names the damage
    # torch.save archives hold data.pkl and data/; only TorchScript archives hold code/ and constants.pkl.
    parts = [name.split("/") for name in names]
    return any(p[-1] == "constants.pkl" for p in parts) and any("code" in p[:-1] for p in parts)


def _load_torchscript(path: Path) -> torch.nn.Module:
    try:
        with warnings.catch_warnings():
            # torch's deprecation notice is for whoever writes TorchScript, not for the user auditing a file.
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # the TorchScript reader raises RuntimeError and others for damaged archives
        raise CheckpointError(f"checkpoint '{path}' is a damaged TorchScript archive ({_first_line(exc)}); "
                              "export it again with torch.jit.script(model).save(path)") from None


def _torch_load(path: Path) -> Any:
    not_a_checkpoint = (f"checkpoint '{path}' is not a checkpoint: not safetensors, TorchScript or a torch.save "
                        "file ({}); check the path, or copy the file again if it was cut short")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _unsupported_global(str(exc))
        if found is None:
            raise CheckpointError(not_a_checkpoint.format("an unreadable pickle")) from None
        raise CheckpointError(
            f"checkpoint '{path}' holds Python objects (such as {found}), not only tensors, so it is not loaded: "
            f"loading it could run code; {FIX}"
        ) from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(not_a_checkpoint.format(f"{type(exc).__name__}: {_first_line(exc)[:120]}")) from None


def _unsupported_global(message: str) -> str | None:
    """The class a refused pickle names, or None when the refusal is that of damaged bytes.

    A truncated file can also name a global: one cut short (``torch._utils._rebuild_tens``), which torch
    would have had, so a missing name under ``torch`` means damage, not an object."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if not found:
        return None
    name = found.group(1)
    if name.split(".")[0] == "torch" and not _resolves(name):
        return None
    return name


def _resolves(name: str) -> bool:
    module, _, attribute = name.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), attribute)
    except (ImportError, ValueError):
        return False


def _checkpoint(path: Path, format: str, loaded: Any, key: str) -> Checkpoint:
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"checkpoint '{path}' holds a {type(loaded).__name__}, not a dict of tensors (a "
                              f"state dict); {FIX}")
    ignored: list[str] = []
    node, nested = _descend(path, loaded, key, ignored) if key else (loaded, "")
    node, nested = _auto_descend(path, node, nested, ignored)
    state = {}
    for name, value in node.items():
        if isinstance(value, torch.Tensor):
            state[str(name)] = value.detach()
        else:
            ignored.append(_join(nested, str(name)))
    if not state:
        where = f"'{nested}' in checkpoint '{path}'" if nested else f"checkpoint '{path}'"
        raise CheckpointError(f"{where} holds no tensors; choose the entry holding the weights with "
                              "model.key=NAME")
    return Checkpoint(path, format, state, None, nested, ignored)


def _descend(path: Path, node: Mapping, key: str, ignored: list[str]) -> tuple[Mapping, str]:
    """Follow the dotted ``key`` exactly; inside a flat state dict the rest of it is a prefix of names."""
    parts = key.split(".")
    nested = ""
    for index, part in enumerate(parts):
        if _all_tensors(node):
            prefix = ".".join(parts[index:]) + "."
            selected = {name[len(prefix):]: value for name, value in node.items() if str(name).startswith(prefix)}
            if selected:
                ignored.extend(_join(nested, str(name)) for name in node if not str(name).startswith(prefix))
                return selected, _join(nested, prefix[:-1])
        if part not in node:
            raise CheckpointError(f"checkpoint '{path}' has no entry {key!r} (model.key): "
                                  f"{_available(node, nested)}")
        ignored.extend(_join(nested, str(name)) for name in node if name != part)
        node, nested = node[part], _join(nested, part)
        if not isinstance(node, Mapping):
            raise CheckpointError(f"checkpoint '{path}': model.key = {key!r} is a {type(node).__name__}, not a "
                                  f"dict of tensors; {_available(node, nested)}")
    return node, nested


def _auto_descend(path: Path, node: Mapping, nested: str, ignored: list[str]) -> tuple[Mapping, str]:
    """The first present of :data:`NESTED_KEYS` holding a dict, repeatedly, until a dict holds tensors."""
    while node and not _all_tensors(node):  # an empty dict: the caller says it holds no tensors
        inner = next((name for name in NESTED_KEYS if isinstance(node.get(name), Mapping)), None)
        if inner is None:
            if any(isinstance(value, torch.Tensor) for value in node.values()):
                return node, nested
            raise CheckpointError(f"checkpoint '{path}' holds no state dict (a dict of tensors) where dejavu looks "
                                  f"for one; {_available(node, nested)}; choose the entry holding the weights with "
                                  "model.key=NAME")
        ignored.extend(_join(nested, str(name)) for name in node if name != inner)
        node, nested = node[inner], _join(nested, inner)
    return node, nested


def _all_tensors(node: Any) -> bool:
    return isinstance(node, Mapping) and bool(node) and all(isinstance(v, torch.Tensor) for v in node.values())


def _available(node: Any, nested: str) -> str:
    where = f"'{nested}'" if nested else "the file"
    if not isinstance(node, Mapping):
        return f"{where} is a {type(node).__name__}"
    if not node:
        return f"{where} is an empty dict"
    names = [str(name) for name in node]
    shown = ", ".join(f"'{name}'" for name in names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    return f"{where} holds {shown}"


def _join(nested: str, name: str) -> str:
    return f"{nested}.{name}" if nested else name


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
