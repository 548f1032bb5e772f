"""Models trained elsewhere, made into encoders with dejavu's interface (a backbone, a projector, ``embed``
at a named layer): from a checkpoint file, a TorchScript file, a factory function, or a module object.

What the network is (first that applies):

1. a TorchScript file: the scripted module itself;
2. ``model.factory=package.module:function``: what the function returns (the checkpoint, when given,
   is loaded into it);
3. a module object given to :func:`dejavu.audit` (the checkpoint is the object);
4. ``model.arch``: a dejavu backbone by name, ``timm:NAME``, or ``open_clip:NAME`` (a CLIP whose text side
   the vision-language test uses, see :mod:`dejavu.models.outside_clip`; a module object given with it is taken
   as that model); empty: ``train.backbone`` with its ``train.*`` settings, so the config of the run that
   trained the weights is enough.

A module from 1-3 that has ``backbone`` and ``projector`` submodules (dejavu's own encoder does) embeds at
``backbone`` = ``backbone(x)`` and ``projector`` = ``projector(backbone(x))``; any other module's output is
the backbone embedding and it has no projector. For 4 the weights are matched to the network by the rule
of :mod:`dejavu.models.matching` and the projector is read from the checkpoint (``model.projector``).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dejavu.config.specs import layer_names
from dejavu.errors import CheckpointError, ConfigError
from dejavu.models.backbones import build_backbone
from dejavu.models.checkpoint import Checkpoint, file_provenance, read_checkpoint
from dejavu.models.encoder import Encoder
from dejavu.models.heads import projector as build_projector
from dejavu.models.matching import load_projector, match_state, projector_spec, projector_weights, strip_wrappers
from dejavu.models.outside_clip import OPEN_CLIP, ClipText, build as build_open_clip, check_offline, image_side
from dejavu.models.outside_clip import preprocess_stats
from dejavu.models.outside_clip import script_state, split_image_tower

# The normalisation of dejavu's evaluation tensors (dejavu.data.augment.MEAN / STD): what Preprocess undoes.
DEJAVU_MEAN, DEJAVU_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
OBJECT_SCHEME = "python:"
ROLES = {"A": "target", "B": "reference"}

# Module objects given to dejavu.audit in this process, by the name the config records.
_OBJECTS: dict[str, nn.Module] = {}


def register_module(module: nn.Module) -> str:
    """Keep ``module`` for this process and return the name a config records for it (``model.target``):
    ``python:<class>@<digest of its state>``, so that another module, or new weights, is another run."""
    if not isinstance(module, nn.Module):
        raise ConfigError(f"dejavu.audit: a model must be a checkpoint path or a torch.nn.Module, not a "
                          f"{type(module).__name__}")
    name = f"{OBJECT_SCHEME}{type(module).__name__}@{_state_digest(module)}"
    _OBJECTS[name] = module
    return name


def _state_digest(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def _object(name: str, key: str) -> nn.Module:
    if name not in _OBJECTS:
        raise ConfigError(f"config key '{key}' = {name!r} names a module object given to dejavu.audit() in another "
                          "Python process; pass it again: dejavu.audit(target=module, out=...)")
    return _OBJECTS[name]


_DIGESTS: dict[tuple[str, int, int], str] = {}


def checkpoint_digest(path: str) -> str:
    """SHA-256 of a checkpoint (of a module object: its state), cached by path, size and modification time:
    fingerprints ask for it often, and hashing a ResNet-50 takes a moment."""
    if path.startswith(OBJECT_SCHEME):
        return path.rsplit("@", 1)[-1]
    try:
        stat = os.stat(path)
    except OSError:
        return "missing"  # the stage that reads it says so, with the file's name
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_provenance(path)["sha256"]
    return _DIGESTS[key]


class Preprocess(nn.Module):
    """From dejavu's evaluation tensors (normalised with dejavu's mean and std) to what the network expects:
    its own normalisation and, with ``center_crop``, the central ``fraction`` resized back to the side.

    The identity (no arithmetic at all) for dejavu's own normalisation and ``full``: weights exported from a
    dejavu run embed to exactly the same numbers."""

    def __init__(self, mean: list[float], std: list[float], resize: str = "full", fraction: float = 0.875):
        super().__init__()
        self.renormalise = tuple(mean) != DEJAVU_MEAN or tuple(std) != DEJAVU_STD
        scale = torch.tensor(DEJAVU_STD) / torch.tensor(std)
        shift = (torch.tensor(DEJAVU_MEAN) - torch.tensor(mean)) / torch.tensor(std)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)
        self.resize, self.fraction = resize, fraction

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.renormalise:
            images = images * self.scale + self.shift
        if self.resize == "center_crop":
            side = images.shape[-1]
            keep = max(1, round(side * self.fraction))
            start = (side - keep) // 2
            images = F.interpolate(images[..., start : start + keep, start : start + keep], size=(side, side),
                                   mode="bilinear", antialias=True, align_corners=False)
        return images


class OutsideEncoder(Encoder):
    """A network trained elsewhere behind dejavu's encoder interface: ``backbone`` (preprocessing included),
    ``projector`` (empty when it has none) and :meth:`embed` / :meth:`head` at its :attr:`layers`.

    ``spec`` is the projector's widths when it is dejavu's layout (then ``projectorN`` exists too), ``""``
    for none; a module object's own head of another layout embeds at ``projector`` only."""

    def __init__(self, network: nn.Module, head: nn.Module | None, spec: str, preprocess: Preprocess,
                 source: str = "the model"):
        nn.Module.__init__(self)
        self.backbone = nn.Sequential(preprocess, network)
        self.projector = head if head is not None else nn.Sequential()
        self.projector_spec = spec
        self.source = source
        self._layers = ["backbone"] if head is None else layer_names(spec) if spec else ["backbone", "projector"]

    @property
    def layers(self) -> list[str]:
        return self._layers

    def embed(self, images: torch.Tensor, layer: str) -> torch.Tensor:
        if layer not in self.layers:
            raise ConfigError(no_projector(layer, self.source) if len(self.layers) == 1 else
                              f"config key 'attack.layer' = {layer!r}: the {self.source} embeds at "
                              f"{', '.join(self.layers)}")
        return self.head(self.backbone(images), layer)

    def head(self, features: torch.Tensor, layer: str) -> torch.Tensor:
        if layer == "projector" and not self.projector_spec:
            return self.projector(features)
        return super().head(features, layer)


def no_projector(layer: str, source: str) -> str:
    return (f"config key 'attack.layer' = {layer!r}, but {source} has no projector (only a backbone); use "
            "attack.layer=backbone, or give the projector's widths with model.projector=WIDTHS")


@dataclass
class Loaded:
    """An outside model and what was loaded: the file (path, bytes, SHA-256), its format, where the weights
    were, what was dropped or missing, the network and its embedding widths."""

    encoder: OutsideEncoder
    source: dict[str, Any] = field(default_factory=dict)
    # An open_clip model's text side (tokenizer and encode_text), for the vision-language test; else None.
    text: ClipText | None = None


def load_outside(config: Any, model: str) -> Loaded:
    """The outside model of ``model`` (A: ``model.target``, B: ``model.reference``) for ``config``, checked to
    take images of the side it will be given and to embed at ``attack.layer``, every problem one
    :class:`CheckpointError` / :class:`ConfigError` line naming the file."""
    m = config.model
    key = "model.target" if model == "A" else "model.reference"
    where = m.target if model == "A" else m.reference
    side = input_side(config)
    mean, std = list(m.mean), list(m.std)
    source: dict[str, Any] = {"role": ROLES[model], "config_key": key}
    label = f"{ROLES[model]} '{where}'"
    text = None
    if where.startswith(OBJECT_SCHEME):
        module = _object(where, key)
        source.update(path=where, format="module object", sha256=checkpoint_digest(where))
        arch = f"{type(module).__name__} (a module object)"
        if m.arch.startswith(OPEN_CLIP):
            network, head, text, mean, std = _open_clip(config, None, module, source, label)
            spec = ""  # the projection is the model's own, not dejavu's projector layout
        else:
            network, head, spec = _split_module(module)
    else:
        checkpoint = read_checkpoint(where, m.key)
        source.update(file_provenance(where), format=checkpoint.format, nested=checkpoint.nested,
                      ignored=checkpoint.ignored)
        if m.arch.startswith(OPEN_CLIP):
            network, head, text, mean, std = _open_clip(config, checkpoint, None, source, label)
            spec, arch = "", m.arch
        else:
            network, head, spec, arch = _network(config, checkpoint, source)
    preprocess = Preprocess(mean, std, m.resize, m.crop_fraction)
    encoder = OutsideEncoder(network, head, spec, preprocess, label)
    encoder.eval()
    widths = _widths(encoder, side, label, arch, config.attack.layer)
    source.update(arch=arch, named=bool(source.pop("named", False)), projector=spec or ("none" if head is None else "the module's own"), layers=encoder.layers,
                  widths=widths, image_size=side, mean=mean, std=std, resize=m.resize,
                  crop_fraction=m.crop_fraction if m.resize == "center_crop" else None)
    return Loaded(encoder, source, text)


def _open_clip(config: Any, checkpoint: Checkpoint | None, module: nn.Module | None, source: dict[str, Any],
               label: str) -> tuple[nn.Module, nn.Module, ClipText, list[float], list[float]]:
    """An open_clip model (built from ``model.arch`` and the file's weights, or a module object): its image tower
    as backbone and projector, its text side, and the mean and std it takes (its own unless model.mean /
    model.std were set to something other than dejavu's)."""
    m = config.model
    name = m.arch.removeprefix(OPEN_CLIP)
    check_offline(name)
    if checkpoint is None:
        if not (isinstance(getattr(module, "visual", None), nn.Module) and callable(getattr(module, "encode_text", None))):
            raise ConfigError(f"config key 'model.arch' = {m.arch!r}, but the {label} is a {type(module).__name__}, "
                              "not an open_clip model (with visual and encode_text)")
        # The tower is split below: the caller's object stays as it was (and where it was: a GPU, half precision).
        model = copy.deepcopy(module).to("cpu", torch.float32)
    else:
        model = build_open_clip(name, m.image_size)
        matched = match_state(script_state(checkpoint.state, model), model.state_dict(), checkpoint.path, strict=m.strict,
                              what="the open_clip model", arch=m.arch)
        _load(model, matched, checkpoint.path, source)
        source["named"] = True
    model.eval()
    text = ClipText(model, name)
    backbone, head = split_image_tower(model)
    own_mean, own_std = preprocess_stats(model)  # dejavu's defaults stand for "unset" with these models
    mean = own_mean if tuple(m.mean) == DEJAVU_MEAN else list(m.mean)
    std = own_std if tuple(m.std) == DEJAVU_STD else list(m.std)
    return backbone, head, text, mean, std


def input_side(config: Any) -> int:
    """The side of the images the audited networks see: ``model.image_size``, or ``data.input_size`` (an
    open_clip model's own side)."""
    m = config.model
    if not m.audited:
        return config.data.input_size
    if not m.image_size and m.arch.startswith(OPEN_CLIP):
        return image_side(m.arch.removeprefix(OPEN_CLIP))  # its positional embeddings fix it
    return m.image_size or config.data.input_size


def _split_module(module: nn.Module) -> tuple[nn.Module, nn.Module | None, str]:
    """(network, head, spec): a module with ``backbone`` and ``projector`` submodules is an encoder."""
    backbone, head = getattr(module, "backbone", None), getattr(module, "projector", None)
    if isinstance(backbone, nn.Module) and isinstance(head, nn.Module):
        # dejavu's own encoder says its projector's widths (projectorN exists); another head is one layer.
        return backbone, head, str(getattr(module, "projector_spec", "") or "")
    return module, None, ""


def _network(config: Any, checkpoint: Checkpoint, source: dict[str, Any]) -> tuple[nn.Module, nn.Module | None, str, str]:
    """The network, its projector head and spec, and a name for the report, with the weights loaded."""
    m, t = config.model, config.train
    path = checkpoint.path
    if checkpoint.module is not None and not m.factory:
        network, head, spec = _split_module(checkpoint.module)
        return network, head, spec, "TorchScript module"
    if m.factory:
        built = _factory(m.factory)
        matched = match_state(checkpoint.state, built.state_dict(), path, strict=m.strict, what="the factory's module",
                              arch=m.factory)
        _load(built, matched, path, source)
        network, head, spec = _split_module(built)
        return network, head, spec, f"factory {m.factory}"
    name = m.arch or t.backbone
    side = input_side(config)
    if name.startswith("timm:"):
        network = _timm(name.removeprefix("timm:"), side)
        arch = name
    else:
        stem = _stem(checkpoint, name) if t.stem == "auto" else t.stem
        network = build_backbone(name, list(t.widths), input_size=side, stem=stem, patch_size=t.patch_size)
        arch = name if name != "convnet" else f"convnet (widths {'-'.join(map(str, t.widths))})"
    matched = match_state(checkpoint.state, network.state_dict(), path, strict=m.strict, what="the backbone", arch=name)
    _load(network, matched, path, source)
    source["named"] = True
    head, spec, loaded = _projector(m.projector, checkpoint, matched.prefix, network, path, side)
    if loaded:  # the projector's weights were used too: not dropped
        source["dropped"] = [key for key in source["dropped"] if not strip_wrappers(key).startswith(loaded)]
    return network, head, spec, arch


def _stem(checkpoint: Checkpoint, name: str) -> str:
    """A ResNet's stem read from its first convolution (with ``train.stem=auto``): 7 x 7 is torchvision's
    ImageNet stem, 3 x 3 dejavu's small one; "auto" (by the input size) when the file does not say."""
    if not name.startswith("resnet"):
        return "auto"
    kernels = {tuple(tensor.shape[-2:]) for key, tensor in checkpoint.state.items()
               if (key == "conv1.weight" or key.endswith(".conv1.weight")) and tensor.ndim == 4 and tensor.shape[1] == 3}
    return "imagenet" if kernels == {(7, 7)} else "small" if kernels == {(3, 3)} else "auto"


def _load(network: nn.Module, matched: Any, path: Path, source: dict[str, Any]) -> None:
    network.load_state_dict(matched.state, strict=not matched.missing)
    source.update(prefix=matched.prefix, loaded=len(matched.state), dropped=list(matched.dropped),
                  missing=list(matched.missing))
    if matched.missing:
        shown = ", ".join(f"'{key}'" for key in matched.missing[:3])
        print(f"dejavu: warning: checkpoint '{path}': {len(matched.missing)} weights of the network are not in the "
              f"file and keep their random initial values (model.strict=false), e.g. {shown}; the sanity gates "
              "judge the result")


def _projector(choice: str, checkpoint: Checkpoint, prefix: str, network: nn.Module, path: Path,
               side: int) -> tuple[nn.Module | None, str, str]:
    """(head, spec, prefix of the checkpoint's names it was loaded from, "" when none was)."""
    if choice == "none":
        return None, "", ""
    found = projector_weights(checkpoint.state, path)
    if found is None:
        if choice == "auto":
            return None, "", ""
        raise CheckpointError(f"checkpoint '{path}' holds no projector weights (keys under projector., head., ...), "
                              f"but model.projector = {choice!r}; use model.projector=none and attack.layer=backbone")
    spec = projector_spec(found)
    if choice != "auto" and choice != spec:
        raise CheckpointError(f"checkpoint '{path}' holds a projector of widths {spec}, not model.projector = "
                              f"{choice!r}; set model.projector={spec} (or auto)")
    width = _features(network, side)
    head = build_projector(width, spec)
    load_projector(found, head, path)
    return head, spec, found.prefix


def _features(network: nn.Module, side: int) -> int:
    width = getattr(network, "out_features", None)
    if isinstance(width, int):
        return width
    with torch.no_grad():
        return int(network.eval()(torch.zeros(2, 3, side, side)).reshape(2, -1).shape[1])


def _widths(encoder: OutsideEncoder, side: int, label: str, arch: str, layer: str) -> dict[str, int]:
    """The embedding width at every layer, from one forward pass of two blank images: a network that cannot
    take images of this side, or whose output is not one vector per image, fails here, before any work."""
    widths = {}
    with torch.no_grad():
        for name in encoder.layers:
            try:
                out = encoder.embed(torch.zeros(2, 3, side, side), name)
            except (RuntimeError, ValueError, AssertionError, TypeError) as exc:
                detail = " ".join(str(exc).split())[:200]
                raise ConfigError(
                    f"the {label} ({arch}) cannot embed {side} x {side} images ({detail}); set model.image_size (or "
                    "data.input_size) to the side it was trained at"
                ) from None
            if out.ndim != 2 or out.shape[0] != 2:
                raise ConfigError(f"the {label} ({arch}) returns {tuple(out.shape)} for 2 images, not one vector "
                                  "per image; wrap it to return pooled features (model.factory)")
            widths[name] = int(out.shape[1])
    if layer not in widths:
        encoder.embed(torch.zeros(2, 3, side, side), layer)  # raises the ConfigError that says why
    return widths


def _factory(spec: str) -> nn.Module:
    module_name, function_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"config key 'model.factory' = {spec!r}: cannot import '{module_name}' ({exc}); is its "
                          "package installed, or its folder on PYTHONPATH?") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"config key 'model.factory' = {spec!r}: '{module_name}' has no function '{function_name}'")
    built = function()
    if not isinstance(built, nn.Module):
        raise ConfigError(f"config key 'model.factory' = {spec!r} returned a {type(built).__name__}, not a "
                          "torch.nn.Module")
    return built


def _timm(name: str, side: int) -> nn.Module:
    try:
        import timm  # an optional extra: pip install -e '.[timm]'
    except ImportError:
        raise ConfigError(f"config key 'model.arch' = 'timm:{name}' needs timm: pip install -e '.[timm]'") from None
    try:
        # No download: the weights come from the checkpoint file; num_classes=0 leaves the pooled features.
        kwargs = {"img_size": side} if "vit" in name or "deit" in name else {}
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(f"config key 'model.arch' = 'timm:{name}': timm cannot build it ({exc})") from None


def check_pair(target: Loaded, reference: Loaded, layer: str) -> None:
    """The two models of a two-model audit must be alike: the same network and embedding widths, or the
    comparison measures the architectures, not memorization."""
    a, b = target.source, reference.source
    # Networks dejavu builds by name are compared by name; a module object, factory or TorchScript file by
    # its embedding widths alone (the same weights may come as a file and as an object).
    if a.get("named") and b.get("named") and a["arch"] != b["arch"]:
        raise ConfigError(f"the target ({a['path']}) is a {a['arch']} but the reference ({b['path']}) a {b['arch']}: "
                          "audit two models of the same network and recipe")
    if a["widths"].get(layer) != b["widths"].get(layer):
        raise ConfigError(f"the target embeds at {layer} to {a['widths'].get(layer)} dimensions but the reference to "
                          f"{b['widths'].get(layer)} ({a['path']} vs {b['path']}): audit two models of the same network")
