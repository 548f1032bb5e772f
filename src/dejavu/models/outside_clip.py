"""open_clip models trained elsewhere (``model.arch=open_clip:NAME``): the network open_clip builds from its model
config, with no download, and the text side the vision-language test needs (open_clip's tokenizer and
``encode_text``).

NAME is one of open_clip's built-in configs (``ViT-B-32``, ``RN50``, ...), a model-config JSON file (open_clip's
own format: ``embed_dim``, ``vision_cfg``, ``text_cfg``), a folder holding ``open_clip_config.json`` (the layout
of open_clip's Hugging Face releases), or the name of such a folder shipped in ``configs/open_clip/``
(``vit_tiny_32``: a 32 px ViT CLIP for CPU demonstrations). The weights come from the audited file only, read by dejavu's checkpoint
reader (never ``torch.load`` without ``weights_only``); :mod:`dejavu.models.outside` matches and loads them.

open_clip is imported inside the functions: it takes seconds to import, and only these audits need it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dejavu.config.shipped import shipped_folder
from dejavu.errors import ConfigError

OPEN_CLIP = "open_clip:"
# Keys OpenAI's TorchScript archives hold beside the weights (open_clip's own loader drops them too).
SCRIPT_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def absolute_arch(arch: str) -> str:
    """``open_clip:PATH`` with an existing PATH made absolute (the run folder is resumed from anywhere); any
    other ``model.arch`` as it is."""
    path = Path(arch.removeprefix(OPEN_CLIP)).expanduser()
    return f"{OPEN_CLIP}{path.resolve()}" if arch.startswith(OPEN_CLIP) and path.exists() else arch


def _refuse(name: str, why: str) -> ConfigError:
    return ConfigError(f"config key 'model.arch' = '{OPEN_CLIP}{name}': {why}")


def _identifier(name: str) -> str:
    """open_clip's name for NAME: a built-in config, a JSON file registered under its stem, or ``local-dir:``."""
    import open_clip  # seconds to import: only open_clip audits pay for it

    path = Path(name)
    shipped = shipped_folder() / "open_clip" / name
    if not path.exists() and name and shipped.is_dir():  # dejavu's own small configs (configs/open_clip/)
        path = shipped
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise _refuse(name, f"the folder '{path}' holds no open_clip_config.json (the model config of open_clip's "
                                "releases)")
        return f"local-dir:{path}"
    if path.suffix == ".json":
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise _refuse(name, f"cannot read the model config '{path}' ({' '.join(str(exc).split())})") from None
        if isinstance(config, dict) and "model_cfg" in config and path.name == "open_clip_config.json":
            return f"local-dir:{path.parent}"
        if not (isinstance(config, dict) and all(key in config for key in ("embed_dim", "vision_cfg", "text_cfg"))):
            raise _refuse(name, f"'{path}' is not an open_clip model config: expected an object with embed_dim, "
                                "vision_cfg and text_cfg (as open_clip/model_configs/ViT-B-32.json)")
        _register(str(path.resolve()), path.stat().st_mtime_ns)
        return path.stem
    if name not in open_clip.list_models():
        known = ", ".join(m for m in open_clip.list_models() if m in ("RN50", "ViT-B-32", "ViT-B-16", "ViT-L-14"))
        raise _refuse(name, f"open_clip has no such model config (e.g. {known}; or a model-config JSON file, or a "
                            "folder holding open_clip_config.json)")
    return name


@lru_cache(maxsize=None)
def _register(path: str, modified: int) -> None:
    """open_clip's registry learns the JSON file (once per version of it: every call re-reads all its configs)."""
    import open_clip  # seconds to import: only open_clip audits pay for it

    open_clip.add_model_config(Path(path))


def _model_config(name: str) -> dict[str, Any]:
    import open_clip  # seconds to import: only open_clip audits pay for it

    identifier = _identifier(name)
    if identifier.startswith("local-dir:"):
        return json.loads((Path(identifier.removeprefix("local-dir:")) / "open_clip_config.json").read_text())["model_cfg"]
    return open_clip.get_model_config(identifier)


@lru_cache(maxsize=64)
def image_side(name: str) -> int:
    """The side the model's image tower takes (its ``vision_cfg.image_size``): ``model.image_size=0`` means it."""
    size = _model_config(name)["vision_cfg"].get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


@contextlib.contextmanager
def _quiet():
    # open_clip logs "no pretrained weights loaded" at WARNING: true of the empty network, not of the audit.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def check_offline(name: str) -> None:
    """Refuse, before any work, a model that open_clip would complete from the Hugging Face Hub: a Hugging Face
    text tower, or a Hub tokenizer (one in a release folder is local). Nothing an audit builds is downloaded."""
    identifier = _identifier(name)
    text = _model_config(name).get("text_cfg", {})
    if text.get("hf_model_name"):
        raise _refuse(name, f"its text tower is the Hugging Face model '{text['hf_model_name']}', which open_clip "
                            "downloads; dejavu audits open_clip models built from their config alone")
    hub_tokenizer = text.get("hf_tokenizer_name") or ("siglip" in identifier.lower())
    if hub_tokenizer and not identifier.startswith("local-dir:"):
        raise _refuse(name, "its tokenizer comes from the Hugging Face Hub; give the release folder that holds it "
                            "(model.arch=open_clip:FOLDER with open_clip_config.json and the tokenizer's files)")


def build(name: str, image_size: int = 0) -> nn.Module:
    """The open_clip model of NAME with random weights (the audited file's are loaded into it), on the CPU;
    ``image_size``: the side it was trained at when not its config's (open_clip_train's --force-image-size).
    The caller has refused what would be downloaded (:func:`check_offline`)."""
    import open_clip  # seconds to import: only open_clip audits pay for it

    try:
        with _quiet():
            return open_clip.create_model(_identifier(name), pretrained=None, load_weights=False, pretrained_image=False,
                                          pretrained_text=False, force_image_size=image_size or None)
    except (RuntimeError, ValueError, OSError, ImportError, KeyError, TypeError) as exc:
        raise _refuse(name, f"open_clip cannot build it ({' '.join(str(exc).split())[:200]})") from None


def tokenizer(name: str):
    """open_clip's tokenizer for NAME (its context length; a Hugging Face tokenizer only from a local folder)."""
    import open_clip  # seconds to import: only open_clip audits pay for it

    try:
        with _quiet():
            return open_clip.get_tokenizer(_identifier(name))
    except (RuntimeError, ValueError, OSError, ImportError, KeyError) as exc:
        raise _refuse(name, f"open_clip cannot make its tokenizer ({' '.join(str(exc).split())[:200]})") from None


def split_image_tower(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(backbone, projector) of the image tower: a ViT's pooled features and its projection to the joint space
    as a linear layer; a tower whose projection is inside its pooling (ResNet's attention pool, timm towers) is
    the backbone whole, and ``projector`` is the same output (the joint space either way)."""
    visual = model.visual
    proj = getattr(visual, "proj", None)
    if isinstance(proj, nn.Parameter) and proj.ndim == 2:
        head = nn.Linear(proj.shape[0], proj.shape[1], bias=False)
        with torch.no_grad():
            head.weight.copy_(proj.detach().T)
        visual.proj = None  # the tower now stops at its pooled features; the head applies the projection
        return visual, head
    return visual, nn.Identity()


class ClipText(nn.Module):
    """The text side of an open_clip model: its tokenizer, and ``encode_text`` into the joint space."""

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        self.model, self.name = model, name
        self._tokenizer: Any = None

    def tokenize(self, captions) -> np.ndarray:
        # Made at first use: only the vlm stage tokenizes, and building the vocabulary takes a moment.
        if self._tokenizer is None:
            self._tokenizer = tokenizer(self.name)
        captions = [str(caption) for caption in captions]
        if not captions:
            return np.zeros((0, 1), dtype=np.int64)
        return self._tokenizer(captions).numpy().astype(np.int64)

    @property
    def output_dim(self) -> int:
        device = next(self.model.parameters()).device
        with torch.no_grad():
            return int(self.model.encode_text(torch.from_numpy(self.tokenize(["a"])).to(device)).shape[1])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


def preprocess_stats(model: nn.Module) -> tuple[list[float], list[float]]:
    """The mean and std the model was trained with: what open_clip records with its config, else open_clip's
    default (OpenAI's), as for a model built directly from its class."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # only open_clip audits need them

    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    return ([float(v) for v in cfg.get("mean", OPENAI_DATASET_MEAN)],
            [float(v) for v in cfg.get("std", OPENAI_DATASET_STD)])


def script_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict without what is not a weight of ``model``: the entries OpenAI's TorchScript CLIP archives
    carry, and the buffers ``model`` recomputes (its attention mask), which a TorchScript file saves."""
    transient = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    return {key: value for key, value in state.items() if key not in SCRIPT_EXTRAS and key not in transient}
