"""A state dict from elsewhere matched to a module's parameter names (the matching rule), and the SSL
projector it holds, loaded into a dejavu projector.

The matching rule:

1. The wrappers' prefixes are removed: ``module.`` (DistributedDataParallel, DataParallel) and
   ``_orig_mod.`` (``torch.compile``) at the start of a name, repeatedly; ``_orig_mod.`` anywhere (a
   compiled submodule).
2. The prefix of the module's weights is found: for a checkpoint name ``k`` and a module name ``e`` with
   ``k == e`` or ``k`` ending in ``"." + e``, ``k[:-len(e)]`` is a candidate; the candidate under which the
   most distinct module names occur wins, on a tie the shorter, then the first in the file (MoCo's
   ``encoder_q.`` before ``encoder_k.``, BYOL's ``online_network.`` before ``target_network.``).
   Typical: ``""``, ``backbone.``, ``encoder.``, ``base_encoder.``, ``encoder_q.``.
3. Names outside that prefix (projector, classifier, predictor, the momentum copy) are dropped, and so
   are heads under it that the module lacks (torchvision's ``fc.``, ``head.``, ``classifier.``, ...:
   :data:`HEADS`); other names under it that the module does not have are an error (another variant of
   the architecture), dropped with ``model.strict=false``.
4. Every module name must be given, except BatchNorm's ``num_batches_tracked`` counters (the module's
   own are kept); with ``model.strict=false`` the gaps are reported in :attr:`Match.missing` instead.
5. Shapes must agree, floating-point weights must be stored as floating point and be finite.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dejavu.errors import CheckpointError

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Where SSL codebases keep the projector (expander), most specific first.
PROJECTOR_PREFIXES = ("projector.", "projection_head.", "projection.", "head.", "expander.", "mlp.", "fc.")
COUNTER = "num_batches_tracked"
# Heads that a network's checkpoint carries at the network's own level (torchvision's fc, a ViT's head):
# not a variant of the architecture, so never an error, even with model.strict=true.
HEADS = ("fc", "head", "heads", "classifier", "projector", "projection_head", "projection", "expander", "mlp",
         "predictor", "prototypes", "last_layer")


@dataclass
class Match:
    """The checkpoint's weights under the module's names, and what was left out."""

    state: dict[str, torch.Tensor]  # the module's names (num_batches_tracked filled in from the module)
    prefix: str  # the prefix removed from the checkpoint's names, wrappers included, e.g. "module.backbone."
    dropped: list[str] = field(default_factory=list)  # checkpoint names not used, sorted
    missing: list[str] = field(default_factory=list)  # module names not given (model.strict=false only)


@dataclass
class ProjectorWeights:
    """A projector found in a checkpoint: its Linear layers and the BatchNorm layers between them, in order."""

    prefix: str  # e.g. "projector." or "backbone.fc."
    layers: list[tuple[str, str, dict[str, torch.Tensor]]]  # (module name, "linear" | "norm" | "other", tensors)

    @property
    def linears(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [(t["weight"], t.get("bias")) for _, kind, t in self.layers if kind == "linear"]

    @property
    def norms(self) -> list[dict[str, torch.Tensor]]:
        return [t for _, kind, t in self.layers if kind == "norm"]

    @property
    def in_features(self) -> int:
        return int(self.linears[0][0].shape[1])


def strip_wrappers(name: str) -> str:
    """``name`` without the prefixes that DDP, DataParallel and ``torch.compile`` add."""
    while name.startswith(WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name.replace("._orig_mod.", ".")


def match_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path, *,
                strict: bool = True, what: str = "the backbone", arch: str = "") -> Match:
    """``state`` under the names of ``expected`` (a module's ``state_dict()``) by the rule of this module."""
    path = Path(path)
    stripped = _stripped(state, path)
    names = set(expected)
    found = _candidates(stripped, names)
    real = {name for name in names if not name.endswith(COUNTER)}
    scored = [(prefix, keys) for prefix, keys in found.items() if keys & real]
    if not scored:
        raise CheckpointError(_foreign(path, stripped, expected, what, arch))
    # On a tie the shorter prefix, then the first in the file (dicts keep candidates in file order).
    prefix, _ = min(scored, key=lambda item: (-len(item[1]), len(item[0])))
    under = {name[len(prefix):]: name for name in stripped if name.startswith(prefix)}
    used = {key: under[key] for key in expected if key in under}
    unexpected = sorted(key for key in under if key not in names and key.split(".")[0] not in HEADS)
    missing = [key for key in expected if key not in used and not key.endswith(COUNTER)]
    label = arch or what
    if strict and missing:
        raise CheckpointError(_missing(path, missing, stripped, expected, prefix, label))
    if strict and unexpected:
        shown = ", ".join(f"'{prefix}{key}'" for key in unexpected[:3])
        raise CheckpointError(
            f"checkpoint '{path}' has {len(unexpected)} weights under '{prefix}' that {label} does not have, e.g. "
            f"{shown}: another variant of the architecture (set model.arch), or extra modules; accept extra keys "
            "with model.strict=false"
        )
    matched = {key: stripped[name][1] for key, name in used.items()}
    check_values(path, matched, expected, label)
    for key, own in expected.items():
        if key.endswith(COUNTER) and key not in matched:
            matched[key] = own.detach().clone()  # a count of updates, not a weight
    kept = {stripped[name][0] for name in used.values()}
    dropped = sorted(original for original, _ in stripped.values() if original not in kept)
    return Match(matched, _original_prefix(stripped, used, prefix), dropped, missing if not strict else [])


def _stripped(state: dict[str, torch.Tensor], path: Path) -> dict[str, tuple[str, torch.Tensor]]:
    """Stripped name -> (name in the file, tensor), in file order."""
    stripped: dict[str, tuple[str, torch.Tensor]] = {}
    for original, tensor in state.items():
        name = strip_wrappers(original)
        if name in stripped:
            raise CheckpointError(
                f"checkpoint '{path}' holds both '{stripped[name][0]}' and '{original}', the same weight with and "
                "without a wrapper's prefix; choose one copy with model.key or re-save the unwrapped model"
            )
        stripped[name] = (original, tensor)
    return stripped


def _candidates(stripped: dict[str, tuple[str, torch.Tensor]], names: set[str]) -> dict[str, set[str]]:
    """Candidate prefix -> the module names found under it, in the order the prefixes first occur."""
    found: dict[str, set[str]] = {}
    for name in stripped:
        parts = name.split(".")
        for start in range(len(parts)):
            suffix = ".".join(parts[start:])
            if suffix in names:
                found.setdefault(name[: len(name) - len(suffix)], set()).add(suffix)
    return found


def _original_prefix(stripped: dict[str, tuple[str, torch.Tensor]], used: dict[str, str], prefix: str) -> str:
    """The prefix as the file spells it (``module.backbone.``) when every matched name agrees on it."""
    originals = {stripped[name][0][: len(stripped[name][0]) - len(key)] if stripped[name][0].endswith(key) else None
                 for key, name in used.items()}
    return originals.pop() or prefix if len(originals) == 1 else prefix


def _leading(names: list[str]) -> str:
    """The most common first components of ``names``, with their counts: what a reader recognises."""
    counts: dict[str, int] = {}
    for name in names:
        head = name.split(".")[0] + "." if "." in name else name
        counts[head] = counts.get(head, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:3]
    return ", ".join(f"'{head}' ({count})" for head, count in ranked)


def _added_prefix(stripped: dict[str, tuple[str, torch.Tensor]], expected: dict[str, torch.Tensor]) -> str:
    """A prefix the module's names have and the checkpoint's lack (a wrapper module around the network).

    Only one under which at least half the checkpoint's names occur: short names (``bn1.weight``) end many
    of a network's own names, which is no sign of a wrapper."""
    counts: dict[str, set[str]] = {}
    for key in expected:
        parts = key.split(".")
        for start in range(1, len(parts)):
            suffix = ".".join(parts[start:])
            if suffix in stripped:
                counts.setdefault(".".join(parts[:start]) + ".", set()).add(suffix)
    best = max(counts, key=lambda head: len(counts[head]), default="")
    return best if best and 2 * len(counts[best]) >= len(stripped) else ""


def _hint(stripped: dict[str, tuple[str, torch.Tensor]], expected: dict[str, torch.Tensor], prefix: str) -> str:
    added = _added_prefix(stripped, expected)
    if added:
        return (f"the module's keys start with '{added}' and the checkpoint's do not: the file holds the weights of "
                "that part only; load it into that part (model.factory= returning it), or save the whole module; ")
    own = {key.split(".")[0] for key in expected}
    foreign = [name for name in stripped if name.split(".")[0] not in own]
    if not foreign:
        return ""
    return (f"the checkpoint's keys start with {_leading(foreign)} and the weights were taken from under "
            f"'{prefix}': if they are elsewhere, choose the entry with model.key; ")


def _missing(path: Path, missing: list[str], stripped: dict, expected: dict, prefix: str, label: str) -> str:
    shown = ", ".join(f"'{key}'" for key in missing[:3])
    first = ", ".join(f"'{name}'" for name in list(stripped)[:3])
    weights = sum(not key.endswith(COUNTER) for key in expected)
    return (f"checkpoint '{path}' lacks {len(missing)} of the {weights} weights of {label}, e.g. {shown} (its keys: "
            f"{first}, ...); {_hint(stripped, expected, prefix)}another variant of the network: set "
            "model.arch; or accept the gaps with model.strict=false (they keep random values)")


def _foreign(path: Path, stripped: dict, expected: dict, what: str, arch: str) -> str:
    wanted = ", ".join(f"'{key}'" for key in [k for k in expected if not k.endswith(COUNTER)][:2])
    found = ", ".join(f"'{name}'" for name in list(stripped)[:3])
    added = _added_prefix(stripped, expected)
    hint = (f"the module's keys start with '{added}' and the checkpoint's do not; " if added else "")
    return (f"checkpoint '{path}' does not hold the weights of {arch or what}: expected keys of {arch or what} such "
            f"as {wanted}; found {found}, ...; {hint}set model.arch to the network it was trained with, or build it "
            "with model.factory=package.module:function")


def check_values(path: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], label: str) -> None:
    """Shapes, dtypes and values before ``state`` is loaded into ``expected``'s module.

    ``load_state_dict`` casts silently: integers destroy weights. A weight that is not finite makes every
    embedding NaN, and the neighbours then vote for arbitrary classes."""
    lossy = []
    for key, tensor in state.items():
        target = expected[key]
        if tensor.shape != target.shape:
            raise CheckpointError(
                f"checkpoint '{path}': '{key}' has shape {_shape(tensor)} in the checkpoint but {_shape(target)} in "
                f"{label}: the checkpoint is of another architecture or width; set model.arch (and train.widths)"
            )
        if not target.is_floating_point():
            continue  # integer buffers (BatchNorm counts) stay as they are
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
                "the training diverged or the file was damaged; use an earlier checkpoint or retrain the model"
            )
    if lossy:
        print(f"dejavu: warning: checkpoint '{path}': {len(lossy)} tensors of lower precision are cast up (their "
              f"values keep it): {', '.join(lossy[:3])}{', ...' if len(lossy) > 3 else ''}", file=sys.stderr)


def _shape(tensor: torch.Tensor) -> str:
    return str(tuple(tensor.shape))


def _natural(name: str) -> list[tuple[int, int | str]]:
    """Sort key in which ``projector.10`` follows ``projector.2``."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"\.", name)]


def projector_weights(state: dict[str, torch.Tensor], path: Path) -> ProjectorWeights | None:
    """The SSL projector in ``state``, or None.

    Looked for under the first of :data:`PROJECTOR_PREFIXES` that holds one, at the top level or under one
    container (``backbone.fc.``, ``encoder_q.fc.``: torchvision-based codebases replace ``fc``); deeper
    names are a network's own blocks (a ViT's ``blocks.0.mlp.``). A head counts with at least two Linear
    layers, or any under ``projector.``: a single Linear ``fc.`` or ``head.`` is a classifier. ``path`` is
    the file's, for the messages of :func:`load_projector` to come (the same signature as the others)."""
    names = {strip_wrappers(name): tensor for name, tensor in state.items()}
    split = [name.split(".") for name in names]
    for candidate in PROJECTOR_PREFIXES:
        top = [candidate] if any(parts[0] + "." == candidate for parts in split) else []
        # File order: under MoCo's encoder_q. before encoder_k., as the backbone's prefix is chosen.
        nested = dict.fromkeys(f"{parts[0]}.{candidate}" for parts in split
                               if len(parts) > 2 and parts[1] + "." == candidate)
        prefixes = top + list(nested)
        for prefix in prefixes:
            found = _projector_at(names, prefix)
            linears = sum(kind == "linear" for _, kind, _ in found.layers)
            if linears >= 2 or (linears and candidate == "projector."):
                return found
    return None


def _projector_at(names: dict[str, torch.Tensor], prefix: str) -> ProjectorWeights:
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in names.items():
        if name.startswith(prefix):
            module, _, leaf = name.rpartition(".")
            modules.setdefault(module, {})[leaf] = tensor
    layers = []
    for module in sorted(modules, key=_natural):
        tensors = modules[module]
        weight = tensors.get("weight")
        if weight is not None and weight.dim() == 2:
            kind = "linear"
        elif "running_mean" in tensors and (weight is None or weight.dim() == 1):
            kind = "norm"
        else:
            kind = "other"
        layers.append((module, kind, tensors))
    return ProjectorWeights(prefix, layers)


def projector_spec(weights: ProjectorWeights) -> str:
    """The widths of the projector's Linear layers, ``"w1-w2-...-wL"`` (``model.projector``)."""
    return "-".join(str(int(weight.shape[0])) for weight, _ in weights.linears)


def load_projector(weights: ProjectorWeights, head: nn.Sequential, path: Path) -> None:
    """Copy ``weights`` into ``head`` (from :func:`dejavu.models.heads.projector`), layer by layer in order.

    dejavu's projector is Linear-BN-ReLU blocks then a final Linear; the outside head must be Linear, BN,
    Linear, BN, ..., Linear (its activations hold no weights: ReLU is assumed, as in VICReg and SimCLR)."""
    path = Path(path)
    found = " ".join(_kind(kind) for _, kind, _ in weights.layers)
    where = f"checkpoint '{path}': the projector under '{weights.prefix}' is {found}"
    other = [name for name, kind, _ in weights.layers if kind == "other"]
    if other:
        raise CheckpointError(f"{where}; '{other[0]}' is neither a Linear nor a BatchNorm layer, so it is not "
                              "dejavu's Linear-BN-ReLU projector: use model.projector=none (the backbone only) or "
                              "build the model with model.factory=")
    kinds = [kind for _, kind, _ in weights.layers]
    if kinds != ["linear", "norm"] * (len(kinds) // 2) + ["linear"]:
        raise CheckpointError(f"{where}, not Linear BN ... Linear (a BatchNorm between every two Linears, none after "
                              "the last) as dejavu's projector: use model.projector=none (the backbone only) or build "
                              "the model with model.factory=")
    targets = _projector_modules(head)
    if len(targets) != len(weights.layers):
        raise CheckpointError(f"{where} ({len(weights.layers)} layers), but the projector built for it has "
                              f"{len(targets)}; set model.projector={projector_spec(weights)}")
    with torch.no_grad():
        for (name, _, tensors), target in zip(weights.layers, targets):
            _copy(path, name, tensors, target)


def _kind(kind: str) -> str:
    return {"linear": "Linear", "norm": "BN"}.get(kind, "?")


def _projector_modules(head: nn.Sequential) -> list[nn.Module]:
    return [m for m in head.modules() if isinstance(m, (nn.Linear, nn.BatchNorm1d))]


def _copy(path: Path, name: str, tensors: dict[str, torch.Tensor], target: nn.Module) -> None:
    own = dict(target.named_parameters()) | dict(target.named_buffers())
    for leaf, value in own.items():
        given = tensors.get(leaf)
        if given is None:
            # A Linear without bias is one with a zero bias; a BatchNorm without affine, one of weight 1, bias 0.
            if leaf in ("bias", "weight", COUNTER):
                value.copy_(torch.ones_like(value) if leaf == "weight" else torch.zeros_like(value))
                continue
            raise CheckpointError(f"checkpoint '{path}': the projector layer '{name}' has no '{leaf}'; re-export the "
                                  "whole projector, or use model.projector=none")
        if given.shape != value.shape:
            raise CheckpointError(f"checkpoint '{path}': '{name}.{leaf}' has shape {_shape(given)} in the checkpoint "
                                  f"but {_shape(value)} in the projector built for it: the backbone's output width "
                                  "differs from the projector's input; set model.arch")
        if value.is_floating_point() and (not given.is_floating_point() or not torch.isfinite(given).all()):
            raise CheckpointError(f"checkpoint '{path}': '{name}.{leaf}' is not finite floating-point weights "
                                  f"({given.dtype}); use an earlier checkpoint or re-export it as float32")
        value.copy_(given)
