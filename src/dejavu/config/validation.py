"""Validation before any work: every key's declared choices and bounds, then the checks across keys."""

from __future__ import annotations

import os

from dejavu.config.checks import check_fields
from dejavu.config.schema import BUILT_IN, Config, choices, keeps_epoch
from dejavu.config.specs import check_layer, parse_projector_spec, resolve_patch_size
from dejavu.errors import ConfigError


def physical_memory() -> int:
    """Bytes of RAM of this machine (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def validate(config: Config) -> None:
    """Check values and their consistency before any work starts.

    Each key's choices (``Literal``) and bounds (``Annotated``) are declared on its field and checked for
    every section, those of the methods not selected too; what involves several keys is below.
    """
    check_fields(config)
    for check in (_check_dataset, _check_split, _check_captions, _check_network, _check_attack_epoch, _check_model, _check_reconstruct):
        check(config)


def _check_dataset(config: Config) -> None:
    d = config.data
    if d.dataset in BUILT_IN:
        _check_scenes(config)
    elif not d.root:
        raise ConfigError(
            f"config key 'data.root' is empty; dataset '{d.dataset}' reads its images from there "
            "(e.g. data.root=/datasets/imagenet/train)"
        )


def _check_scenes(config: Config) -> None:
    """Checks that only the built-in dataset allows before any work (file datasets check at split time)."""
    d, s, c, a = config.data, config.split, config.crop, config.attack
    if d.n_classes < 2:
        raise ConfigError(f"config key 'data.n_classes': expected at least 2 classes, found {d.n_classes}")
    if not 0.0 <= d.scene_correlation <= 1.0:
        raise ConfigError(f"config key 'data.scene_correlation': expected a probability in [0, 1], found {d.scene_correlation}")
    if len(d.object_scale) != 2 or not 0.0 < d.object_scale[0] <= d.object_scale[1] < 1.0:
        raise ConfigError(f"config key 'data.object_scale': expected [low, high] with 0 < low <= high < 1, found {d.object_scale}")
    low, high = (list(d.objects_per_image) + [0, 0])[:2]
    if d.dataset == "captioned_scenes" and not (
            len(d.objects_per_image) == 2 and d.caption_objects < low <= high <= min(9, d.n_classes)):
        raise ConfigError(
            f"config keys 'data.objects_per_image' = {d.objects_per_image} and 'data.caption_objects' = "
            f"{d.caption_objects}: expected [fewest, most] with data.caption_objects < fewest <= most <= 9 (a 3 x 3 "
            f"grid) and most <= data.n_classes ({d.n_classes}), so every caption leaves an object unnamed"
        )
    if c.min_side_px > d.image_size:
        raise ConfigError(
            f"config key 'crop.min_side_px' = {c.min_side_px} is larger than the image "
            f"(data.image_size = {d.image_size}): no crop could ever be kept"
        )
    pixels = d.n_classes * d.images_per_class * d.image_size ** 2 * 3
    memory = physical_memory()
    if memory and pixels > memory // 2:
        raise ConfigError(
            f"config keys 'data.n_classes' x 'data.images_per_class' x 'data.image_size'^2 = {d.n_classes} x "
            f"{d.images_per_class} x {d.image_size}^2: the generated images would take {pixels / 2 ** 30:.1f} GiB, "
            f"more than half of this machine's {memory / 2 ** 30:.1f} GiB of memory; lower them"
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


def _check_split(config: Config) -> None:
    d, s = config.data, config.split
    if d.dataset in BUILT_IN and s.canaries > s.a_per_class * d.n_classes:  # file datasets: checked at split time
        raise ConfigError(
            f"config key 'split.canaries' = {s.canaries} is larger than A ({s.a_per_class} per class x "
            f"{d.n_classes} classes = {s.a_per_class * d.n_classes} images)"
        )
    if s.public_from_per_class and s.public_from_per_class < s.a_per_class:
        raise ConfigError(
            f"config key 'split.public_from_per_class' = {s.public_from_per_class} is below split.a_per_class = "
            f"{s.a_per_class}: X must come from the partition with the most images per class (or 0 for the same)"
        )
    if s.a_per_class != s.b_per_class:
        raise ConfigError(
            f"config keys 'split.a_per_class' ({s.a_per_class}) and 'split.b_per_class' ({s.b_per_class}) "
            "must be equal: the reference must train on as much data as the target"
        )
    if s.a_per_class * d.n_classes < 2:
        raise ConfigError("config key 'split.a_per_class': each model needs at least 2 training images")


def _check_captions(config: Config) -> None:
    """CLIP trains on image-caption pairs: the data must have captions, and X at least vlm.k images."""
    d, s = config.data, config.split
    if d.captions and d.dataset != "coco":
        raise ConfigError(f"config key 'data.captions' names a COCO captions JSON, but data.dataset = {d.dataset}: "
                          "it is read with data.dataset=coco only")
    if config.train.method != "clip":
        return
    if d.dataset not in ("captioned_scenes", "manifest") and not (d.dataset == "coco" and d.captions):
        raise ConfigError(
            f"config key 'train.method' = clip trains on image-caption pairs, but data.dataset = {d.dataset} has no "
            "captions: use data.dataset=captioned_scenes (built in), coco with data.captions=<captions JSON>, or a "
            "manifest with a caption column"
        )
    m = config.model
    if m.audited and not m.arch.startswith("open_clip:"):
        raise ConfigError("config key 'train.method' = clip in an audit (model.target): the vision-language test "
                          "audits open_clip models, whose text encoder it needs; set model.arch=open_clip:NAME (e.g. "
                          "--arch open_clip:ViT-B-32, or a model-config JSON file); dejavu's own CLIPs are audited by "
                          "dejavu run")
    if m.one_model and config.vlm.reference != "text":
        raise ConfigError("config key 'vlm.reference' = model in a one-model audit (no --reference): with no CLIP "
                          "trained on B, the reference is the text-only retriever; set vlm.reference=text")
    if config.attack.epoch not in (0, config.train.epochs):
        raise ConfigError(f"config key 'attack.epoch' = {config.attack.epoch}: the vision-language test (train.method = "
                          "clip) audits the final weights; leave it 0")
    if d.dataset == "captioned_scenes" and config.vlm.k > s.x_per_class * d.n_classes:
        raise ConfigError(f"config key 'vlm.k' = {config.vlm.k} is larger than the public set X "
                          f"({s.x_per_class} per class x {d.n_classes} classes)")


def _check_network(config: Config) -> None:
    """The backbone against the input size, the projector spec, the attacked layer."""
    d, t = config.data, config.train
    if t.backbone == "convnet" and d.input_size < 2 ** len(t.widths):
        raise ConfigError(
            f"config key 'data.input_size' = {d.input_size} is too small for a {len(t.widths)}-block ConvNet "
            f"(train.widths halves the resolution {len(t.widths)} times): use at least {2 ** len(t.widths)}"
        )
    parse_projector_spec(t.projector)
    projector = config.model.projector
    if not config.model.audited:
        check_layer(config.attack.layer, t.projector)
    elif projector == "none":
        check_layer(config.attack.layer, "")
    elif projector != "auto":
        check_layer(config.attack.layer, projector)
    # (model.projector=auto: the layers exist once the checkpoint says what projector it holds)
    if t.backbone.startswith("vit"):
        resolve_patch_size(t.patch_size, d.input_size)
        if t.method == "dino" and t.dino.local_crops:
            raise ConfigError(
                "config key 'train.dino.local_crops' needs a backbone that takes any input size (convnet, resnet*): "
                f"torchvision's ViT takes only data.input_size = {d.input_size} px; set train.dino.local_crops=0"
            )


def _check_attack_epoch(config: Config) -> None:
    """The audited weights exist: ``attack.epoch`` is one the training keeps."""
    a, t = config.attack, config.train
    if a.epoch > t.epochs:
        raise ConfigError(
            f"config key 'attack.epoch' = {a.epoch} is after the training's last epoch (train.epochs = {t.epochs}); "
            f"choose an epoch up to {t.epochs}, or raise train.epochs"
        )
    if a.epoch and not keeps_epoch(t, a.epoch):
        every = t.checkpoint_every
        kept = [*range(every, min(t.epochs, 11 * every), every)] if every else []
        kept = [e for e in kept if e < t.epochs][:10]
        # Listed arithmetically: with train.epochs in the millions, building the whole list hangs.
        more = every and t.epochs - 1 >= 11 * every
        shown = ", ".join(map(str, [*kept, t.epochs])) if not more else f"{', '.join(map(str, kept))}, ..., {t.epochs}"
        raise ConfigError(
            f"config key 'attack.epoch' = {a.epoch}: the training keeps weights only after epochs {shown} "
            f"(train.epochs = {t.epochs}, train.checkpoint_every = {t.checkpoint_every}); choose one of those, "
            f"or set train.checkpoint_every to a divisor of it (e.g. train.checkpoint_every={a.epoch})"
        )


def _check_model(config: Config) -> None:
    """An audit's checkpoints and network, named consistently (the files themselves are read by its stages)."""
    m = config.model
    if m.reference and not m.target:
        raise ConfigError("config key 'model.reference' is set but 'model.target' is empty: the audit needs the "
                          "target's checkpoint (model.target=PATH, or --target PATH)")
    if not m.audited:
        return
    if config.attack.epoch:
        raise ConfigError(f"config key 'attack.epoch' = {config.attack.epoch} picks a checkpoint of dejavu's own "
                          "training; an audit reads the files of model.target / model.reference: set attack.epoch=0")
    if m.factory and (m.factory.count(":") != 1 or not all(m.factory.split(":"))):
        raise ConfigError(f"config key 'model.factory' = {m.factory!r}: expected 'package.module:function' (a "
                          "function returning the nn.Module, e.g. mylab.models:build_encoder)")
    if m.factory and m.arch:
        raise ConfigError("config keys 'model.factory' and 'model.arch' are both set: the factory builds the network "
                          "itself; leave model.arch empty")
    if m.arch.startswith("timm:") and len(m.arch) == len("timm:"):
        raise ConfigError("config key 'model.arch' = 'timm:': name the timm model, e.g. model.arch=timm:resnet50")
    if m.arch.startswith("open_clip:"):
        _check_open_clip(config)
    if m.projector not in ("auto", "none"):
        try:
            parse_projector_spec(m.projector)
        except ConfigError:
            raise ConfigError(f"config key 'model.projector' = {m.projector!r}: expected auto, none, or layer "
                              "widths joined by '-', e.g. 2048-2048") from None
    valid = choices("train.backbone")  # the backbones dejavu builds
    if m.arch and not m.arch.startswith(("timm:", "open_clip:")) and m.arch not in valid:
        raise ConfigError(f"config key 'model.arch' = {m.arch!r}: unknown network; valid: {', '.join(valid)}, "
                          "timm:NAME, open_clip:NAME, or model.factory=package.module:function for any other")


def _check_open_clip(config: Config) -> None:
    """An open_clip model: named, its image tower embedding at backbone (pooled features) or projector (the
    joint space), and no projector read from the file (the projection is the model's own)."""
    m = config.model
    if m.arch == "open_clip:":
        raise ConfigError("config key 'model.arch' = 'open_clip:': name the open_clip model config, e.g. "
                          "model.arch=open_clip:ViT-B-32, or a model-config JSON file, or a folder holding "
                          "open_clip_config.json")
    if m.projector != "auto":
        raise ConfigError(f"config key 'model.projector' = {m.projector!r}: an open_clip model's projection is its "
                          "own (attack.layer=projector: the joint space); leave model.projector=auto")
    if config.attack.layer not in ("backbone", "projector"):
        raise ConfigError(f"config key 'attack.layer' = {config.attack.layer!r}: an open_clip model embeds at "
                          "backbone (the image tower's pooled features) or projector (the joint space)")


def _check_reconstruct(config: Config) -> None:
    """The decoder's levels against its side, the attack condition's neighbours against attack.k."""
    r = config.reconstruct
    check_decoder_levels(r.image_size, r.channels)
    if r.enabled and r.neighbours > config.attack.k:
        raise ConfigError(f"config key 'reconstruct.neighbours' = {r.neighbours} is more than the attack keeps per crop "
                          f"(attack.k = {config.attack.k}): use at most that many")
    if r.steps > r.diffusion_steps:
        raise ConfigError(f"config key 'reconstruct.steps' = {r.steps} is more than the decoder's diffusion has "
                          f"(reconstruct.diffusion_steps = {r.diffusion_steps}): sample in at most that many steps")
    check_guidance(r.guidance, r.condition_dropout)
    if r.enabled and config.model.one_model:
        raise ConfigError("config key 'reconstruct.enabled' = true in a one-model audit (no --reference): the "
                          "reconstruction compares the target's decoder with a reference model's; give --reference")


def check_decoder_levels(image_size: int, channels: list[int]) -> None:
    """The decoder's side halves once per level of ``channels`` but the last (also checked by
    :meth:`dejavu.reconstruct.decoder.DecoderSettings.check`, for settings built without a config)."""
    levels = len(channels)
    if image_size % 2 ** (levels - 1):
        raise ConfigError(f"config key 'reconstruct.image_size' = {image_size} cannot be halved {levels - 1} times "
                          f"(reconstruct.channels has {levels} levels): use a multiple of {2 ** (levels - 1)}")


def check_guidance(guidance: float, condition_dropout: float) -> None:
    """Classifier-free guidance needs a decoder that also learnt to draw without its condition (also checked by
    :meth:`dejavu.reconstruct.decoder.DecoderSettings.check`)."""
    if guidance != 1 and not condition_dropout:
        raise ConfigError(f"config key 'reconstruct.guidance' = {guidance:g} needs decoders that also learnt to draw "
                          "without their condition: set reconstruct.condition_dropout above 0 (e.g. 0.1), or guidance 1")
