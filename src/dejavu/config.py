"""Typed run configuration: dataclasses, YAML loading, dotted overrides, validation.

The dataclass defaults *are* the demo run (`configs/demo.yaml` spells them out; a test keeps
the two identical), so `dejavu run` with no arguments needs no file on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dejavu.errors import ConfigError


@dataclass
class DataConfig:
    """The labelled image set: the built-in procedural `scenes`, or files (imagenet, voc, coco, manifest)."""

    dataset: str = "scenes"
    # Files: `root` is the image folder (imagenet: the train folder of <wnid>/ subfolders; voc: the folder
    # holding JPEGImages/ and Annotations/; coco: the folder of the images; manifest: the CSV/JSONL file,
    # or the base folder of its paths). `annotations`: imagenet's Annotation/ folder (default
    # <root>/../Annotation), voc's Annotations/ (default <root>/Annotations), coco's instances JSON, or the
    # manifest when `root` is its base folder.
    root: str = ""
    annotations: str = ""
    # Keep only these classes (wnids / category names); empty: all.
    classes: list[str] = field(default_factory=list)
    # VOC/COCO images hold several objects: the image's label is the largest object's class or the first's.
    label_policy: str = "largest"
    # Decode every file once into a uint8 cache of image_size x image_size (memory-mapped by later stages).
    cache: bool = True
    # DataLoader processes that decode files (-1: one per core, at most 8; 0: the main process).
    workers: int = -1
    # Built-in scenes only: classes, images per class, scene correlation, detail, object scale.
    n_classes: int = 10
    images_per_class: int = 700
    # Probability that an image's scene type is its class's own scene (water -> swan);
    # otherwise the scene is drawn uniformly, so backgrounds are informative but not decisive.
    scene_correlation: float = 0.5
    # Per-image gratings and motif in the background: what makes a single image memorizable.
    background_detail: bool = True
    object_scale: list[float] = field(default_factory=lambda: [0.35, 0.6])
    # Scenes: the generated side. Files: the side of the cache (each image squashed to it; crops are
    # cut from the original file at full resolution instead).
    image_size: int = 64
    # Side of the square the models see (full images are resized to it, crops too).
    input_size: int = 32


@dataclass
class SplitConfig:
    """Per-class sizes of the disjoint sets A (target), B (reference), X (public), T (held-out)."""

    # "balanced": exactly these counts per class from all images. "paper": Meehan et al.'s partition:
    # boxed images split evenly between A and B up to a_per_class each, unboxed images fill both up to
    # a_per_class as a shared set (trained on by both, never attacked), X from the rest; T first
    # reserves t_per_class boxed images per class (the control attacks their crops).
    # "auto": paper for file datasets, balanced for the built-in scenes.
    scheme: str = "auto"
    a_per_class: int = 10
    b_per_class: int = 10
    # Balanced: exact count. Paper: a cap (X takes what is left, at most this many per class).
    x_per_class: int = 500
    t_per_class: int = 100
    # Paper scheme: X comes from what the partition with this many per class leaves (the paper
    # uses 500 for every set size, so one X serves all of them); 0: a_per_class.
    public_from_per_class: int = 0
    # Near-duplicates: 64-bit perceptual hashes within this Hamming distance (-1: check disabled).
    near_duplicate_distance: int = 4
    # Drop all but one image of every exact/near-duplicate cluster before splitting.
    drop_duplicates: bool = False
    # Proceed even when a duplicate crosses two sets (the report then says so).
    allow_leakage: bool = False
    # Self-check: this many of A's boxed images (in all, 0: off) become canaries, planted memorization:
    # model A sees each canary `canary_repeats` times per epoch (B and the sets A/B/X/T are unchanged);
    # metrics.json["canaries"] and the report compare their detection with ordinary A images and T.
    canaries: int = 0
    canary_repeats: int = 10


@dataclass
class CropConfig:
    """Periphery crop: largest box-free rectangle by shortest side."""

    # Crops whose shortest side is below this many pixels are skipped (reason recorded).
    min_side_px: int = 12
    # "periphery": the largest box-free rectangle; "corner": the paper's fixed lower-left corner
    # variant (corner_fraction of width and height; it may contain part of an object, counted).
    mode: str = "periphery"
    # "optimal": the true largest box-free rectangle (kept when side >= min_side_px). "paper": the
    # paper's candidates (never spanning a box's x-edge; kept when side > min_side_px; images with a
    # box past the right edge skipped), for exact reproduction.
    rule: str = "optimal"
    corner_fraction: float = 0.3


@dataclass
class AugmentConfig:
    """Two-view SSL augmentation (applied batched to tensors)."""

    # Down to 8 % of the area (as VICReg on ImageNet): small views resemble the zoomed-in crops.
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    flip_p: float = 0.5
    jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])
    jitter_p: float = 0.8
    grayscale_p: float = 0.2


@dataclass
class VicregConfig:
    """VICReg's loss weights (the paper's 25 / 25 / 1)."""

    sim_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0


@dataclass
class SimclrConfig:
    temperature: float = 0.15


@dataclass
class BarlowTwinsConfig:
    lambda_off_diagonal: float = 0.0051


@dataclass
class ByolConfig:
    """Predictor width and the EMA target's momentum, raised along a cosine from `momentum` to `momentum_final`."""

    predictor_hidden: int = 512
    momentum: float = 0.996
    momentum_final: float = 1.0


@dataclass
class DinoConfig:
    """DINO's prototypes, temperatures (teacher warmed up linearly), centring and EMA teacher."""

    out_dim: int = 1024
    # Prototypes of unit length (logits are cosines: stable, but at small scale too flat to sharpen), or free.
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 50
    center_momentum: float = 0.9
    momentum: float = 0.996
    momentum_final: float = 1.0
    # Multi-crop: this many extra small views (side `local_crop_size`, 0: input_size // 2), students only.
    local_crops: int = 0
    local_crop_size: int = 0
    local_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])


@dataclass
class SupervisedConfig:
    """The supervised baseline: a linear classifier on the projector, cross-entropy on one augmented view."""

    label_smoothing: float = 0.0


# The methods; each has a section of `train` named after it, and only the selected one is part of a recipe.
METHOD_NAMES = ("vicreg", "simclr", "barlow_twins", "byol", "dino", "supervised")


@dataclass
class TrainConfig:
    """One recipe (method, network, optimisation), applied identically to the target (A) and the reference (B)."""

    method: str = "vicreg"
    backbone: str = "convnet"
    # ConvNet channel widths (convnet only).
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    # ResNet stem: "small" (3x3, stride 1, no max-pool) for 32-64 px, "imagenet", or "auto" (small up to 64 px).
    stem: str = "auto"
    # ViT patch side (0: 16 from 128 px up, else input_size // 8).
    patch_size: int = 0
    projector: str = "512-512-512"
    epochs: int = 1000
    # The global batch: split evenly over the processes of a distributed run.
    batch_size: int = 100
    optimizer: str = "adamw"
    lr: float = 1e-3
    # "linear": the learning rate is lr x batch_size / 256 (the paper's base-lr convention); "none": lr as given.
    lr_scaling: str = "none"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    # Learning-rate schedule: linear warm-up (capped at `epochs`), then cosine decay to zero ("cosine")
    # or flat ("constant").
    schedule: str = "cosine"
    warmup_epochs: int = 10
    # Clip the gradient's global norm to this (0: off).
    grad_clip: float = 0.0
    # Autocast precision on the device: "fp32", "bf16" (GPU or CPU) or "fp16" (GPU only, with a loss scaler).
    precision: str = "fp32"
    # BatchNorm statistics over all processes of a distributed GPU run (torch's SyncBatchNorm needs GPUs).
    sync_batchnorm: bool = False
    vicreg: VicregConfig = field(default_factory=VicregConfig)
    simclr: SimclrConfig = field(default_factory=SimclrConfig)
    barlow_twins: BarlowTwinsConfig = field(default_factory=BarlowTwinsConfig)
    byol: ByolConfig = field(default_factory=ByolConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Keep weights every N epochs for epoch sweeps (0: final weights only).
    checkpoint_every: int = 0
    # Seed of the training alone (initialisation, augmentations, batch order); -1: derived from the run's
    # `seed` like every other random choice. Set it to repeat a training over a fixed data split.
    seed: int = -1
    # The resume state is written after an epoch when this many seconds passed since the last one.
    resume_every_s: float = 10.0


def train_recipe(train: TrainConfig) -> dict[str, Any]:
    """The training section without the sections of methods not selected (they change nothing)."""
    recipe = dataclasses.asdict(train)
    for method in METHOD_NAMES:
        if method != train.method:
            recipe.pop(method)
    recipe.pop("resume_every_s")  # how often the resume state is saved does not change the weights
    if train.seed == -1:
        recipe.pop("seed")  # the default leaves the recipe (and checkpoints written before the key) as they were
    return recipe


def saved_epochs(train: TrainConfig) -> list[int]:
    """The epochs whose weights a training keeps: every ``checkpoint_every``-th, and the last."""
    every = train.checkpoint_every
    return sorted({*(range(every, train.epochs, every) if every else ()), train.epochs})


@dataclass
class AttackConfig:
    """Label inference from the periphery crop by k nearest public neighbours."""

    layer: str = "projector"
    # The weights audited (attack and conventional metrics): those after this training epoch, one of the
    # epochs the training keeps (train.checkpoint_every); 0: the final weights.
    epoch: int = 0
    k: int = 100
    backend: str = "faiss"
    batch_size: int = 512


@dataclass
class EvaluateConfig:
    """Conventional metrics next to memorization: kNN accuracy and a linear probe on full images."""

    # Neighbours voting in kNN accuracy (capped at the size of X).
    knn_k: int = 20
    # Full-batch L-BFGS iterations of the linear probe.
    probe_epochs: int = 100


@dataclass
class MetricsConfig:
    """Statistics of the gap. Accuracies are always reported at p = 5 %, 20 % and the curve 5..100 %."""

    bootstrap: int = 2000
    ci_level: float = 0.95
    alpha: float = 0.01


@dataclass
class ReportConfig:
    gallery: int = 16
    neighbours: int = 8


@dataclass
class Config:
    """A whole run. `seed` drives every random choice; derived seeds are recorded in the run."""

    seed: int = 0
    threads: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *sections: str) -> str:
        """Stable fingerprint of the named top-level sections (e.g. ``"data", "split"``)."""
        payload = {name: self.to_dict()[name] for name in sections}
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


CHOICES = {
    "data.dataset": ("scenes", "imagenet", "voc", "coco", "manifest"),
    "data.label_policy": ("largest", "first"),
    "split.scheme": ("auto", "balanced", "paper"),
    "crop.mode": ("periphery", "corner"),
    "crop.rule": ("optimal", "paper"),
    "train.method": METHOD_NAMES,
    "train.backbone": ("convnet", "resnet18", "resnet50", "resnet101", "vit_tiny", "vit_small", "vit_base"),
    "train.stem": ("auto", "small", "imagenet"),
    "train.optimizer": ("adamw", "sgd", "lars"),
    "train.lr_scaling": ("none", "linear"),
    "train.precision": ("fp32", "bf16", "fp16"),
    "train.schedule": ("cosine", "constant"),
    "attack.backend": ("faiss", "torch"),
}


def _check_value(path: str, value: Any, annotation: Any) -> Any:
    """Coerce ``value`` to ``annotation`` where lossless, else raise a ConfigError naming ``path``."""
    origin = typing.get_origin(annotation)
    if origin in (list, types.GenericAlias) or origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{path}': expected a list, found {value!r}")
        return [_check_value(f"{path}[{i}]", item, item_type) for i, item in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{path}': expected true or false, found {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{path}': expected an integer, found {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{path}': expected a number, found {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{path}': expected a string, found {value!r}")
        return value
    raise AssertionError(f"unsupported annotation {annotation} at {path}")


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        where = f"section '{prefix[:-1]}'" if prefix else "the top level"
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' in {where}; valid keys: {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name not in values:
            continue
        hint = hints[name]
        path = prefix + name
        if dataclasses.is_dataclass(hint):
            if not isinstance(values[name], dict):
                raise ConfigError(f"config key '{path}': expected a mapping of keys, found {values[name]!r}")
            kwargs[name] = _build(hint, values[name], path + ".")
        else:
            kwargs[name] = _check_value(path, values[name], hint)
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is a value, not a section")
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=5", "attack.k=50"]`` into a nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected KEY=VALUE, e.g. train.epochs=5")
        key, raw = item.split("=", 1)
        if not key:
            raise ConfigError(f"override '{item}': empty key")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw != "" else "")
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the demo defaults), apply dotted overrides, validate.

    Example:
        >>> cfg = load_config(None, ["train.epochs=5", "attack.k=50"])
        >>> cfg.train.epochs, cfg.attack.k
        (5, 50)
    """
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file '{path}' is a folder; expected a YAML file")
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file '{path}': expected a mapping at the top, found {type(loaded).__name__}")
        tree = loaded
    if path is not None:
        try:
            _build(Config, tree, "")  # errors in the file itself name the file
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    config = _build(Config, _merge(tree, parse_overrides(overrides or [])), "")
    validate(config)
    return config


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Rebuild a Config from ``Config.to_dict()`` output (e.g. a run's saved ``config.json``)."""
    if not isinstance(tree, dict):
        raise ConfigError(f"expected a mapping of config keys, found {type(tree).__name__}")
    config = _build(Config, tree, "")
    validate(config)
    return config


def validate(config: Config) -> None:
    """Check values and their consistency before any work starts."""
    for key, valid in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value not in valid:
            raise ConfigError(f"config key '{key}': unknown value '{value}'; valid: {', '.join(valid)}")

    d, s, c, t, a, m = config.data, config.split, config.crop, config.train, config.attack, config.metrics
    positive = {
        "data.n_classes": d.n_classes, "data.images_per_class": d.images_per_class,
        "data.image_size": d.image_size, "data.input_size": d.input_size,
        "split.a_per_class": s.a_per_class, "split.b_per_class": s.b_per_class,
        "split.x_per_class": s.x_per_class, "split.t_per_class": s.t_per_class,
        "crop.min_side_px": c.min_side_px, "train.epochs": t.epochs, "train.batch_size": t.batch_size,
        "attack.k": a.k, "attack.batch_size": a.batch_size, "metrics.bootstrap": m.bootstrap,
        "evaluate.knn_k": config.evaluate.knn_k, "evaluate.probe_epochs": config.evaluate.probe_epochs,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"config key '{key}': expected a positive integer, found {value}")
    scenes = d.dataset == "scenes"
    if d.image_size < 16:
        raise ConfigError(f"config key 'data.image_size': expected at least 16 pixels, found {d.image_size}")
    if scenes:
        _validate_scenes(config)
    elif not d.root:
        raise ConfigError(
            f"config key 'data.root' is empty; dataset '{d.dataset}' reads its images from there "
            "(e.g. data.root=/datasets/imagenet/train)"
        )
    if s.near_duplicate_distance < -1 or s.near_duplicate_distance > 15:
        raise ConfigError(
            f"config key 'split.near_duplicate_distance': expected -1 (off) to 15 bits, found {s.near_duplicate_distance}"
        )
    if s.canaries < 0:
        raise ConfigError(f"config key 'split.canaries': expected 0 (off) or a positive count, found {s.canaries}")
    if s.canary_repeats < 1:
        raise ConfigError(f"config key 'split.canary_repeats': expected a positive integer, found {s.canary_repeats}")
    if scenes and s.canaries > s.a_per_class * d.n_classes:  # file datasets: checked at split time
        raise ConfigError(
            f"config key 'split.canaries' = {s.canaries} is larger than A ({s.a_per_class} per class x "
            f"{d.n_classes} classes = {s.a_per_class * d.n_classes} images)"
        )
    if s.public_from_per_class and s.public_from_per_class < s.a_per_class:
        raise ConfigError(
            f"config key 'split.public_from_per_class' = {s.public_from_per_class} is below split.a_per_class = "
            f"{s.a_per_class}: X must come from the partition with the most images per class (or 0 for the same)"
        )
    if d.workers < -1:
        raise ConfigError(f"config key 'data.workers': expected -1 (one per core), 0 or a positive count, found {d.workers}")
    if not 0.0 < c.corner_fraction <= 1.0:
        raise ConfigError(f"config key 'crop.corner_fraction': expected a fraction in (0, 1], found {c.corner_fraction}")
    if not 0.0 < m.ci_level < 1.0:
        raise ConfigError(f"config key 'metrics.ci_level': expected a level in (0, 1), found {m.ci_level}")
    if not 0.0 < m.alpha < 1.0:
        raise ConfigError(f"config key 'metrics.alpha': expected a level in (0, 1), found {m.alpha}")
    if config.seed < 0:
        raise ConfigError(f"config key 'seed': expected a non-negative integer, found {config.seed}")
    if config.threads < 0:
        raise ConfigError(f"config key 'threads': expected 0 (all cores) or a positive count, found {config.threads}")
    if s.a_per_class != s.b_per_class:
        raise ConfigError(
            f"config keys 'split.a_per_class' ({s.a_per_class}) and 'split.b_per_class' ({s.b_per_class}) "
            "must be equal: the reference must train on as much data as the target"
        )
    if t.batch_size < 2:
        raise ConfigError(f"config key 'train.batch_size': expected at least 2 (batch statistics), found {t.batch_size}")
    if s.a_per_class * d.n_classes < 2:
        raise ConfigError("config key 'split.a_per_class': each model needs at least 2 training images")
    if t.warmup_epochs < 0:
        raise ConfigError(f"config key 'train.warmup_epochs': expected >= 0, found {t.warmup_epochs}")
    if t.weight_decay < 0:
        raise ConfigError(f"config key 'train.weight_decay': expected >= 0, found {t.weight_decay}")
    if t.backbone == "convnet" and d.input_size < 2 ** len(t.widths):
        raise ConfigError(
            f"config key 'data.input_size' = {d.input_size} is too small for a {len(t.widths)}-block ConvNet "
            f"(train.widths halves the resolution {len(t.widths)} times): use at least {2 ** len(t.widths)}"
        )
    for key, value in (("report.gallery", config.report.gallery), ("report.neighbours", config.report.neighbours)):
        if value < 0:
            raise ConfigError(f"config key '{key}': expected >= 0, found {value}")
    if t.lr <= 0:
        raise ConfigError(f"config key 'train.lr': expected a positive learning rate, found {t.lr}")
    if t.checkpoint_every < 0:
        raise ConfigError(f"config key 'train.checkpoint_every': expected >= 0, found {t.checkpoint_every}")
    if t.seed < -1:
        raise ConfigError(f"config key 'train.seed': expected -1 (derived from seed) or a non-negative integer, found {t.seed}")
    if a.epoch < 0:
        raise ConfigError(f"config key 'attack.epoch': expected 0 (final weights) or a training epoch, found {a.epoch}")
    if a.epoch > t.epochs:
        raise ConfigError(
            f"config key 'attack.epoch' = {a.epoch} is after the training's last epoch (train.epochs = {t.epochs}); "
            f"choose an epoch up to {t.epochs}, or raise train.epochs"
        )
    if a.epoch and a.epoch not in saved_epochs(t):
        kept = saved_epochs(t)
        shown = ", ".join(map(str, kept)) if len(kept) <= 12 else f"{', '.join(map(str, kept[:10]))}, ..., {kept[-1]}"
        raise ConfigError(
            f"config key 'attack.epoch' = {a.epoch}: the training keeps weights only after epochs {shown} "
            f"(train.epochs = {t.epochs}, train.checkpoint_every = {t.checkpoint_every}); choose one of those, "
            f"or set train.checkpoint_every to a divisor of it (e.g. train.checkpoint_every={a.epoch})"
        )
    if len(t.widths) < 1 or min(t.widths) < 1:
        raise ConfigError(f"config key 'train.widths': expected positive channel widths, found {t.widths}")
    aug = t.augment
    if len(aug.crop_scale) != 2 or not 0.0 < aug.crop_scale[0] <= aug.crop_scale[1] <= 1.0:
        raise ConfigError(f"config key 'train.augment.crop_scale': expected [low, high] in (0, 1], found {aug.crop_scale}")
    if len(aug.jitter) != 4 or min(aug.jitter) < 0 or aug.jitter[3] > 0.5:
        raise ConfigError(
            "config key 'train.augment.jitter': expected 4 non-negative numbers (brightness, contrast, "
            f"saturation, hue <= 0.5), found {aug.jitter}"
        )
    for key in ("flip_p", "jitter_p", "grayscale_p"):
        value = getattr(aug, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"config key 'train.augment.{key}': expected a probability in [0, 1], found {value}")
    from dejavu.models.backbones import resolve_patch_size
    from dejavu.models.encoder import check_layer
    from dejavu.models.heads import parse_projector_spec

    parse_projector_spec(t.projector)
    check_layer(a.layer, t.projector)
    if t.backbone.startswith("vit"):
        resolve_patch_size(t.patch_size, d.input_size)
        if t.method == "dino" and t.dino.local_crops:
            raise ConfigError(
                "config key 'train.dino.local_crops' needs a backbone that takes any input size (convnet, resnet*): "
                f"torchvision's ViT takes only data.input_size = {d.input_size} px; set train.dino.local_crops=0"
            )
    _validate_methods(t)


def _validate_methods(t: TrainConfig) -> None:
    """Ranges of the optimisation keys and of every method's section (all sections, so a typo never waits)."""
    def check(key: str, ok: bool, expected: str, value: Any) -> None:
        if not ok:
            raise ConfigError(f"config key 'train.{key}': expected {expected}, found {value}")

    check("momentum", 0.0 <= t.momentum < 1.0, "a momentum in [0, 1)", t.momentum)
    check("grad_clip", t.grad_clip >= 0, "0 (off) or a positive norm", t.grad_clip)
    check("patch_size", t.patch_size >= 0, "0 (auto) or a positive patch side", t.patch_size)
    check("simclr.temperature", t.simclr.temperature > 0, "a positive temperature", t.simclr.temperature)
    check("barlow_twins.lambda_off_diagonal", t.barlow_twins.lambda_off_diagonal >= 0, ">= 0",
          t.barlow_twins.lambda_off_diagonal)
    for name in ("sim_weight", "var_weight", "cov_weight"):
        value = getattr(t.vicreg, name)
        check(f"vicreg.{name}", value >= 0, ">= 0", value)
    for section in ("byol", "dino"):
        cfg = getattr(t, section)
        check(f"{section}.momentum", 0.0 <= cfg.momentum <= 1.0, "an EMA momentum in [0, 1]", cfg.momentum)
        check(f"{section}.momentum_final", cfg.momentum <= cfg.momentum_final <= 1.0,
              f"a momentum between {section}.momentum ({cfg.momentum}) and 1", cfg.momentum_final)
    check("byol.predictor_hidden", t.byol.predictor_hidden >= 1, "a positive width", t.byol.predictor_hidden)
    d = t.dino
    check("dino.out_dim", d.out_dim >= 1, "a positive number of prototypes", d.out_dim)
    for name in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
        check(f"dino.{name}", getattr(d, name) > 0, "a positive temperature", getattr(d, name))
    check("dino.center_momentum", 0.0 <= d.center_momentum <= 1.0, "a momentum in [0, 1]", d.center_momentum)
    check("dino.warmup_teacher_temp_epochs", d.warmup_teacher_temp_epochs >= 0, ">= 0", d.warmup_teacher_temp_epochs)
    check("dino.local_crops", d.local_crops >= 0, ">= 0", d.local_crops)
    check("dino.local_crop_size", d.local_crop_size >= 0, "0 (half the input) or a positive side", d.local_crop_size)
    scale = d.local_crop_scale
    check("dino.local_crop_scale", len(scale) == 2 and 0.0 < scale[0] <= scale[1] <= 1.0, "[low, high] in (0, 1]", scale)
    smoothing = t.supervised.label_smoothing
    check("supervised.label_smoothing", 0.0 <= smoothing < 1.0, "a value in [0, 1)", smoothing)


def _validate_scenes(config: Config) -> None:
    """Checks that only the built-in dataset allows before any work (file datasets check at split time)."""
    d, s, c, a = config.data, config.split, config.crop, config.attack
    if d.n_classes < 2:
        raise ConfigError(f"config key 'data.n_classes': expected at least 2 classes, found {d.n_classes}")
    if not 0.0 <= d.scene_correlation <= 1.0:
        raise ConfigError(f"config key 'data.scene_correlation': expected a probability in [0, 1], found {d.scene_correlation}")
    if len(d.object_scale) != 2 or not 0.0 < d.object_scale[0] <= d.object_scale[1] < 1.0:
        raise ConfigError(f"config key 'data.object_scale': expected [low, high] with 0 < low <= high < 1, found {d.object_scale}")
    if c.min_side_px > d.image_size:
        raise ConfigError(
            f"config key 'crop.min_side_px' = {c.min_side_px} is larger than the image "
            f"(data.image_size = {d.image_size}): no crop could ever be kept"
        )
    needed = s.a_per_class + s.b_per_class + s.x_per_class + s.t_per_class
    if s.scheme != "paper" and needed > d.images_per_class:
        raise ConfigError(
            f"split sizes do not fit the dataset: A+B+X+T = {s.a_per_class}+{s.b_per_class}+"
            f"{s.x_per_class}+{s.t_per_class} = {needed} images per class, but "
            f"data.images_per_class = {d.images_per_class}"
        )
    if s.t_per_class * d.n_classes < 2:
        raise ConfigError("config key 'split.t_per_class': the negative control needs at least 2 held-out images")
    n_public = s.x_per_class * d.n_classes
    if a.k > n_public:
        raise ConfigError(
            f"config key 'attack.k' = {a.k} is larger than the public set X "
            f"({s.x_per_class} per class x {d.n_classes} classes = {n_public} images)"
        )
