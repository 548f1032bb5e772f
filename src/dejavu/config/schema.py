"""The run configuration's sections: every key with its type, default, choices (``Literal``) and bounds.

Bounds are ``Annotated`` metadata (:mod:`dejavu.config.checks`), checked for every section by
:func:`dejavu.config.validate`; checks across keys are its named functions. The methods' sections of
``train`` come from :mod:`dejavu.config.methods`.
"""

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from dejavu.config.checks import (
    NON_NEGATIVE, POSITIVE, PROBABILITY, Check, at_least, at_most, field_types, literal_choices, pair_within, within,
)
from dejavu.config.methods import METHOD_CONFIGS, MethodName, with_method_sections

Positive = Annotated[int, POSITIVE]


def Count(high: int, what: str) -> Any:  # noqa: N802 (a type alias with a parameter)
    """A positive integer of at most ``high``: sizes past it would exhaust memory or never finish."""
    return Annotated[int, POSITIVE, at_most(high, what)]


# The datasets dejavu generates itself (no files, nothing to download).
BUILT_IN = ("scenes", "captioned_scenes")


@dataclass
class DataConfig:
    """The labelled image set: the built-in procedural `scenes`, or files (imagenet, voc, coco, manifest)."""

    dataset: Literal["scenes", "captioned_scenes", "imagenet", "voc", "coco", "manifest"] = "scenes"
    # Files: `root` is the image folder (imagenet: the train folder of <wnid>/ subfolders; voc: the folder
    # holding JPEGImages/ and Annotations/; coco: the folder of the images; manifest: the CSV/JSONL file,
    # or the base folder of its paths). `annotations`: imagenet's Annotation/ folder (default
    # <root>/../Annotation), voc's Annotations/ (default <root>/Annotations), coco's instances JSON, or the
    # manifest when `root` is its base folder.
    root: str = ""
    annotations: str = ""
    # coco only: a captions JSON (captions_train2017.json) for the vision-language test (train.method=clip).
    captions: str = ""
    # Keep only these classes (wnids / category names); empty: all.
    classes: list[str] = field(default_factory=list)
    # VOC/COCO images hold several objects: the image's label is the largest object's class or the first's.
    label_policy: Literal["largest", "first"] = "largest"
    # Decode every file once into a uint8 cache of image_size x image_size (memory-mapped by later stages).
    cache: bool = True
    # DataLoader processes that decode files (-1: one per core, at most 8; 0: the main process).
    workers: Annotated[int, at_least(-1, "-1 (one per core), 0 or a positive count")] = -1
    # Files: paths a COCO JSON or a manifest names outside `root` (absolute, or `../`) are refused unless this
    # is true (a manifest must not pull arbitrary files of the machine into the public set).
    allow_outside_root: bool = False
    # Files: an image of more pixels than this is refused before it is decoded (a 10,000 x 10,000 PNG
    # takes gigabytes to decode); raise it for such data.
    max_pixels: Count(2 ** 40, "a number of pixels") = 50_000_000
    # Files: an image whose shorter side is below this many pixels is refused (a 1 x 1 image is a broken
    # file, not a picture to upscale into X or T).
    min_image_side: Count(100_000, "a side in pixels") = 16
    # Built-in scenes only: classes, images per class, scene correlation, detail, object scale.
    n_classes: Count(10_000, "a number of classes") = 10
    images_per_class: Count(1_000_000, "a number of images per class") = 700
    # Probability that an image's scene type is its class's own scene (water -> swan);
    # otherwise the scene is drawn uniformly, so backgrounds are informative but not decisive.
    scene_correlation: float = 0.5
    # Per-image gratings and motif in the background: what makes a single image memorizable.
    background_detail: bool = True
    object_scale: list[float] = field(default_factory=lambda: [0.35, 0.6])
    # Built-in captioned_scenes only (the vision-language test): [fewest, most] objects an image holds, and
    # how many of them its caption names (fewer than the fewest, so some object is always left unnamed).
    objects_per_image: list[int] = field(default_factory=lambda: [2, 4])
    caption_objects: Annotated[int, POSITIVE, at_most(8, "a number of objects")] = 1
    # Scenes: the generated side. Files: the side of the cache (each image squashed to it; crops are
    # cut from the original file at full resolution instead).
    image_size: Annotated[Positive, at_least(16, "at least 16 pixels"), at_most(4096, "a side in pixels")] = 64
    # Side of the square the models see (full images are resized to it, crops too).
    input_size: Count(2048, "a side in pixels") = 32


@dataclass
class SplitConfig:
    """Per-class sizes of the disjoint sets A (target), B (reference), X (public), T (held-out)."""

    # "balanced": exactly these counts per class from all images. "paper": Meehan et al.'s partition:
    # boxed images split evenly between A and B up to a_per_class each, unboxed images fill both up to
    # a_per_class as a shared set (trained on by both, never attacked), X from the rest; T first
    # reserves t_per_class boxed images per class (the control attacks their crops).
    # "auto": paper for file datasets, balanced for the built-in scenes.
    scheme: Literal["auto", "balanced", "paper"] = "auto"
    a_per_class: Count(10_000_000, "a number of images per class") = 10
    b_per_class: Count(10_000_000, "a number of images per class") = 10
    # Balanced: exact count. Paper: a cap (X takes what is left, at most this many per class).
    x_per_class: Count(10_000_000, "a number of images per class") = 500
    t_per_class: Count(10_000_000, "a number of images per class") = 100
    # Paper scheme: X comes from what the partition with this many per class leaves (the paper
    # uses 500 for every set size, so one X serves all of them); 0: a_per_class.
    public_from_per_class: int = 0
    # Near-duplicates: 64-bit perceptual hashes within this Hamming distance (-1: check disabled).
    near_duplicate_distance: Annotated[int, Check(lambda v: -1 <= v <= 15, "-1 (off) to 15 bits")] = 4
    # Drop all but one image of every exact/near-duplicate cluster before splitting.
    drop_duplicates: bool = False
    # Proceed even when a duplicate crosses two sets (the report then says so).
    allow_leakage: bool = False
    # Self-check: this many of A's boxed images (in all, 0: off) become canaries, planted memorization:
    # model A sees each canary `canary_repeats` times per epoch (B and the sets A/B/X/T are unchanged);
    # metrics.json["canaries"] and the report compare their detection with ordinary A images and T.
    canaries: Annotated[int, at_least(0, "0 (off) or a positive count")] = 0
    canary_repeats: Count(10_000, "a number of repeats per epoch") = 10


@dataclass
class CropConfig:
    """Periphery crop: largest box-free rectangle by shortest side."""

    # Crops whose shortest side is below this many pixels are skipped (reason recorded).
    min_side_px: Count(1_000_000, "a side in pixels") = 12
    # "periphery": the largest box-free rectangle; "corner": the paper's fixed lower-left corner
    # variant (corner_fraction of width and height; it may contain part of an object, counted).
    mode: Literal["periphery", "corner"] = "periphery"
    # "optimal": the true largest box-free rectangle (kept when side >= min_side_px). "paper": the
    # paper's candidates (never spanning a box's x-edge; kept when side > min_side_px; images with a
    # box past the right edge skipped), for exact reproduction.
    rule: Literal["optimal", "paper"] = "optimal"
    corner_fraction: Annotated[float, within("(0, 1]", "a fraction")] = 0.3


@dataclass
class AugmentConfig:
    """Two-view SSL augmentation (applied batched to tensors)."""

    # Down to 8 % of the area (as VICReg on ImageNet): small views resemble the zoomed-in crops.
    crop_scale: Annotated[list[float], pair_within("(0, 1]")] = field(default_factory=lambda: [0.08, 1.0])
    flip_p: Annotated[float, PROBABILITY] = 0.5
    jitter: Annotated[list[float], Check(
        lambda v: len(v) == 4 and min(v) >= 0 and v[3] <= 0.5,
        "4 non-negative numbers (brightness, contrast, saturation, hue <= 0.5)",
    )] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])
    jitter_p: Annotated[float, PROBABILITY] = 0.8
    grayscale_p: Annotated[float, PROBABILITY] = 0.2


@dataclass
@with_method_sections(after="sync_batchnorm")  # train.vicreg, train.simclr, ...: one per registered method
class TrainConfig:
    """One recipe (method, network, optimisation), applied identically to the target (A) and the reference (B)."""

    method: MethodName = "vicreg"
    backbone: Literal["convnet", "resnet18", "resnet50", "resnet101", "vit_tiny", "vit_small", "vit_base"] = "convnet"
    # ConvNet channel widths (convnet only).
    widths: Annotated[list[int], Check(lambda v: 1 <= len(v) <= 16 and min(v) >= 1 and max(v) <= 16384,
                                       "1 to 16 positive channel widths of at most 16,384")] = field(
        default_factory=lambda: [16, 32, 64, 128]
    )
    # ResNet stem: "small" (3x3, stride 1, no max-pool) for 32-64 px, "imagenet", or "auto" (small up to 64 px).
    stem: Literal["auto", "small", "imagenet"] = "auto"
    # ViT patch side (0: 16 from 128 px up, else input_size // 8).
    patch_size: Annotated[int, at_least(0, "0 (auto) or a positive patch side")] = 0
    projector: str = "512-512-512"
    epochs: Count(100_000, "a number of epochs") = 1000
    # The global batch: split evenly over the processes of a distributed run.
    batch_size: Annotated[Positive, at_least(2, "at least 2 (batch statistics)"), at_most(1_000_000, "a batch")] = 100
    optimizer: Literal["adamw", "sgd", "lars"] = "adamw"
    lr: Annotated[float, Check(lambda v: v > 0, "a positive learning rate")] = 1e-3
    # "linear": the learning rate is lr x batch_size / 256 (the paper's base-lr convention); "none": lr as given.
    lr_scaling: Literal["none", "linear"] = "none"
    weight_decay: Annotated[float, NON_NEGATIVE] = 1e-4
    momentum: Annotated[float, within("[0, 1)", "a momentum")] = 0.9
    # Learning-rate schedule: linear warm-up (capped at `epochs`), then cosine decay to zero ("cosine")
    # or flat ("constant").
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: Annotated[int, NON_NEGATIVE] = 10
    # Clip the gradient's global norm to this (0: off).
    grad_clip: Annotated[float, at_least(0, "0 (off) or a positive norm")] = 0.0
    # Autocast precision on the device: "fp32", "bf16" (GPU or CPU) or "fp16" (GPU only, with a loss scaler).
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # BatchNorm statistics over all processes of a distributed GPU run (torch's SyncBatchNorm needs GPUs).
    sync_batchnorm: bool = False
    # (here: one section per method, `vicreg: VicregConfig` ..., see dejavu.config.methods)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Keep weights every N epochs for epoch sweeps (0: final weights only).
    checkpoint_every: Annotated[int, NON_NEGATIVE] = 0
    # Seed of the training alone (initialisation, augmentations, batch order); -1: derived from the run's
    # `seed` like every other random choice. Set it to repeat a training over a fixed data split.
    seed: Annotated[int, at_least(-1, "-1 (derived from seed) or a non-negative integer")] = -1
    # The resume state is written after an epoch when this many seconds passed since the last one.
    resume_every_s: Annotated[float, NON_NEGATIVE] = 10.0


def _plain(value: Any) -> Any:
    """A section as a dict, a list copied (as ``dataclasses.asdict`` gives them)."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)


def train_recipe(train: TrainConfig) -> dict[str, Any]:
    """The training section without the sections of methods not selected (they change nothing, and are not read)."""
    recipe = {}
    for item in dataclasses.fields(TrainConfig):
        name = item.name
        if name in METHOD_CONFIGS and name != train.method:
            continue
        if name == "resume_every_s":
            continue  # how often the resume state is saved does not change the weights
        if name == "seed" and train.seed == -1:
            continue  # the default leaves the recipe (and checkpoints written before the key) as they were
        recipe[name] = _plain(getattr(train, name))
    return recipe


def saved_epochs(train: TrainConfig) -> list[int]:
    """The epochs whose weights a training keeps: every ``checkpoint_every``-th, and the last."""
    every = train.checkpoint_every
    return sorted({*(range(every, train.epochs, every) if every else ()), train.epochs})


def keeps_epoch(train: TrainConfig, epoch: int) -> bool:
    """Whether the training keeps the weights after ``epoch`` (:func:`saved_epochs` without listing them)."""
    every = train.checkpoint_every
    return epoch == train.epochs or (0 < epoch < train.epochs and every > 0 and epoch % every == 0)


@dataclass
class AttackConfig:
    """Label inference from the periphery crop by k nearest public neighbours."""

    layer: str = "projector"
    # The weights audited (attack and conventional metrics): those after this training epoch, one of the
    # epochs the training keeps (train.checkpoint_every); 0: the final weights.
    epoch: Annotated[int, at_least(0, "0 (final weights) or a training epoch")] = 0
    k: Count(100_000, "a number of neighbours") = 100
    backend: Literal["faiss", "torch"] = "faiss"
    batch_size: Count(1_000_000, "a batch") = 512
    # How embeddings are stored on disk: float32 (exact neighbours) or float16 (half the disk; rounding
    # reorders near-tied neighbours).
    embedding_dtype: Literal["float32", "float16"] = "float32"


@dataclass
class ModelConfig:
    """Models trained elsewhere, audited by ``dejavu audit``: their checkpoints, network and input."""

    # The target's checkpoint (trained on data/export/train_A.txt); "": dejavu trains the target itself.
    target: str = ""
    # The reference's checkpoint (trained on train_B.txt with the target's recipe).
    reference: str = ""
    # The network the weights fit: "" = train.backbone with its train.* settings (widths, stem, patch_size),
    # a dejavu backbone name, or "timm:NAME" (pip install -e '.[timm]'; weights from the file only).
    arch: str = ""
    # "package.module:function" returning the nn.Module (called without arguments); its output is the
    # backbone embedding. The checkpoint, when given, is loaded into it (a TorchScript file needs neither).
    factory: str = ""
    # Where the weights are inside the file: "" finds them (state_dict, model, teacher, student, ...), or a
    # dotted path such as "student".
    key: str = ""
    # "auto": the checkpoint's projector when it holds one (its widths read from the weights); "none": the
    # backbone only; or the widths, e.g. "2048-2048-2048".
    projector: str = "auto"
    # false: keys the network does not have are dropped, and missing ones left at their initial values
    # (reported; the sanity gates judge the result).
    strict: bool = True
    # The side the network sees (0: data.input_size), its normalisation, and whether it sees the whole
    # square ("full") or its central crop_fraction ("center_crop", as torchvision's resize 256 / crop 224).
    image_size: Annotated[int, at_least(0, "0 (data.input_size) or a side in pixels"), at_most(4096, "a side in pixels")] = 0
    mean: Annotated[list[float], Check(lambda v: len(v) == 3, "3 numbers (R, G, B)")] = field(
        default_factory=lambda: [0.5, 0.5, 0.5])
    std: Annotated[list[float], Check(lambda v: len(v) == 3 and min(v) > 0, "3 positive numbers (R, G, B)")] = field(
        default_factory=lambda: [0.25, 0.25, 0.25])
    resize: Literal["full", "center_crop"] = "full"
    crop_fraction: Annotated[float, within("(0, 1]", "a fraction")] = 0.875

    @property
    def audited(self) -> bool:
        """Whether the models come from files (``dejavu audit``) rather than from dejavu's training."""
        return bool(self.target or self.reference)

    @property
    def one_model(self) -> bool:
        """An audit of a target alone: the reference is a correlation classifier (``correlation.*``)."""
        target, reference = self.target, self.reference  # both read: either one decides
        return bool(target) and not reference


@dataclass
class CorrelationConfig:
    """The one-model test's reference (``dejavu audit`` without ``--reference``): a classifier trained with
    labels to predict the object's class from periphery crops of B and X, images the target never saw."""

    backbone: Literal["convnet", "resnet18", "resnet50", "resnet101", "vit_tiny", "vit_small", "vit_base"] = "convnet"
    widths: Annotated[list[int], Check(lambda v: 1 <= len(v) <= 16 and min(v) >= 1 and max(v) <= 16384,
                                       "1 to 16 positive channel widths of at most 16,384")] = field(
        default_factory=lambda: [16, 32, 64, 128]
    )
    epochs: Count(100_000, "a number of epochs") = 20
    batch_size: Annotated[int, at_least(2, "a batch of at least 2 (batch normalisation)"), at_most(1_000_000, "a batch")] = 128
    lr: Annotated[float, within("(0, 10]", "a learning rate")] = 1e-3
    weight_decay: Annotated[float, NON_NEGATIVE] = 5e-4
    label_smoothing: Annotated[float, within("[0, 1)", "a fraction")] = 0.0
    # Held out of the training crops (per class) to choose the epoch and fit the temperature that
    # calibrates the probabilities; 0: the last epoch, temperature 1 (uncalibrated).
    validation_fraction: Annotated[float, within("[0, 1)", "a fraction")] = 0.1
    flip: bool = True
    # Augmentation: random resized crops of min_crop_area..1 of each crop (1: none).
    min_crop_area: Annotated[float, within("(0, 1]", "a fraction")] = 0.7


@dataclass
class ReconstructConfig:
    """Visual reconstruction (RCDM): one diffusion decoder per model, trained on X's images conditioned on
    that model's frozen embeddings, draws what the model infers from a periphery crop."""

    enabled: bool = False
    # Crops reconstructed per attacked set (A, B), and as many of the control T in all (its random halves T1,
    # T2 get about half each): the most confident by the sum of both models' vote confidences (a choice that
    # favours neither model); 0: all kept crops.
    per_direction: Annotated[int, at_least(0, "0 (all kept crops) or a positive count")] = 100
    samples: Count(1000, "a number of samples per crop") = 4
    # DDIM steps per sample.
    steps: Count(10_000, "a number of sampling steps") = 50
    # The attack condition: the mean backbone embedding of this many nearest public neighbours (<= attack.k).
    neighbours: Count(100_000, "a number of neighbours") = 5
    # The decoder (diffusers' UNet2DModel): side, channels per level, residual blocks per level,
    # self-attention at sides up to attention_below (0: none).
    image_size: Annotated[Positive, at_least(8, "at least 8 pixels"), at_most(1024, "a side in pixels")] = 32
    channels: Annotated[list[int], Check(lambda v: 1 <= len(v) <= 8 and min(v) >= 1 and max(v) <= 4096,
                                         "1 to 8 positive channel widths of at most 4,096")] = field(
        default_factory=lambda: [32, 64, 64])
    layers_per_block: Count(16, "a number of blocks") = 1
    attention_below: Annotated[int, at_least(0, "0 (no attention) or a side in pixels")] = 8
    iterations: Count(10_000_000, "a number of iterations") = 2000
    batch_size: Count(100_000, "a batch") = 64
    lr: Annotated[float, within("(0, 1]", "a learning rate")] = 2e-4
    ema_decay: Annotated[float, within("[0, 1)", "a decay")] = 0.999
    diffusion_steps: Count(100_000, "a number of diffusion steps") = 1000
    prediction: Literal["v_prediction", "epsilon"] = "v_prediction"
    # A resume state every this many iterations (what a kill may lose).
    checkpoint_every: Count(10_000_000, "a number of iterations") = 200
    # Classifier-free guidance (beyond RCDM): training rows whose condition is dropped, and the sampling
    # weight (1: none, the paper's; above 1 needs condition_dropout > 0).
    condition_dropout: Annotated[float, within("[0, 1)", "a fraction")] = 0.0
    guidance: Annotated[float, within("[1, 20]", "a guidance weight")] = 1.0
    # The judge: a ConvNet trained with labels on X's full images (never A, B or T) labels each reconstruction.
    judge_epochs: Count(100_000, "a number of epochs") = 20


@dataclass
class EvaluateConfig:
    """Conventional metrics next to memorization: kNN accuracy and a linear probe on full images."""

    # Neighbours voting in kNN accuracy (capped at the size of X).
    knn_k: Count(100_000, "a number of neighbours") = 20
    # Full-batch L-BFGS iterations of the linear probe.
    probe_epochs: Count(100_000, "a number of iterations") = 100


@dataclass
class MetricsConfig:
    """Statistics of the gap. Accuracies are always reported at p = 5 %, 20 % and the curve 5..100 %."""

    bootstrap: Count(1_000_000, "a number of resamples") = 2000
    ci_level: Annotated[float, within("(0, 1)", "a level")] = 0.95
    alpha: Annotated[float, within("(0, 1)", "a level")] = 0.01
    # A test clears a model ("not detected") only when its whole ci_level interval lies within ± this of zero
    # (a gap of accuracies: 0.05 is 5 points; PPG / PRG: a share of records); otherwise p >= alpha is
    # "inconclusive" (dejavu.metrics.outcomes).
    clear_margin: Annotated[float, within("(0, 1)", "a margin")] = 0.05


@dataclass
class VlmConfig:
    """The vision-language test (train.method = clip, Jayaraman et al. 2024): each training caption, embedded by
    the model's text encoder, retrieves its k nearest public images (image encoder); the union of their objects
    is the prediction of what the training image holds."""

    k: Count(10_000, "a number of neighbours") = 10
    # The reference: "model", the CLIP trained on the other set; "text", the follow-up's one-model variant: each
    # caption retrieves the public images whose own captions are nearest by TF-IDF (no image seen, nothing
    # trained), and the verdict tests the gaps beyond the control's.
    reference: Literal["model", "text"] = "model"
    # Records shown in the report (caption, image, each model's retrieved images), most confident first.
    gallery: Annotated[int, NON_NEGATIVE, at_most(1000, "a number of records")] = 8


@dataclass
class ReportConfig:
    gallery: Annotated[int, NON_NEGATIVE, at_most(1000, "a number of examples")] = 16
    neighbours: Annotated[int, NON_NEGATIVE, at_most(100, "a number of neighbours")] = 8


@dataclass
class Config:
    """A whole run. `seed` drives every random choice; derived seeds are recorded in the run."""

    seed: Annotated[int, at_least(0, "a non-negative integer")] = 0
    threads: Annotated[int, at_least(0, "0 (the CPUs this process may use) or a positive count"), at_most(4096, "a thread count")] = 0
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    correlation: CorrelationConfig = field(default_factory=CorrelationConfig)
    reconstruct: ReconstructConfig = field(default_factory=ReconstructConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    vlm: VlmConfig = field(default_factory=VlmConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Keys that change no result: how many threads and decoding processes, how often a training saves its
# resume state. No stage fingerprints them; a run folder accepts new values of the first two on resuming.
NO_EFFECT_KEYS = ("threads", "data.workers", "train.resume_every_s")
RESUMABLE_WITH_OTHER_VALUES = ("threads", "data.workers")


def choices(key: str) -> tuple[str, ...]:
    """The valid values of a key typed as a ``Literal`` (e.g. ``choices("data.dataset")`` for the CLI).

    Example:
        >>> choices("train.optimizer")
        ('adamw', 'sgd', 'lars')
    """
    section: type = Config
    *path, name = key.split(".")
    for part in path:
        section = field_types(section)[part]
    valid = literal_choices(field_types(section).get(name))
    if valid is None:
        raise KeyError(f"config key '{key}' has no fixed choices")
    return valid
