"""The training methods' settings: one dataclass per method, registered under the method's name.

Each registered class becomes a section of ``train`` named after its method (``train.vicreg.sim_weight``),
its name a valid value of ``train.method`` (:data:`MethodName`, :data:`METHOD_NAMES`, in registration
order), and its checks run on every config: the bounds declared on its fields, then its ``check(key)``
if it has one (checks across its own fields; ``key`` is e.g. ``"train.byol"``).

Adding a method ``foo`` takes three things, no more:

1. ``src/dejavu/losses/foo.py``: the loss, a pure function of embeddings.
2. Here: ``@register_method("foo")`` on a ``@dataclass class FooConfig`` with its hyper-parameters (defaults,
   ``Annotated`` bounds, optionally ``check(self, key)``). This makes ``train.method=foo`` valid, adds the
   ``train.foo`` section (after ``train.sync_batchnorm``) and keeps it in recipes only when foo is selected.
3. ``src/dejavu/train/methods.py``: a ``Method`` subclass that calls the loss with ``self.config.foo``'s
   values, and its entry in ``METHODS`` (a test checks that ``METHODS`` names exactly :data:`METHOD_NAMES`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from dejavu.config.checks import NON_NEGATIVE, Check, at_least, at_most, pair_within, within
from dejavu.errors import ConfigError

# Registered method settings by method name, in the order the choices are listed.
METHOD_CONFIGS: dict[str, type] = {}


def register_method(name: str):
    """Class decorator: ``cls`` holds method ``name``'s settings (section ``train.<name>``)."""

    def register(cls: type) -> type:
        METHOD_CONFIGS[name] = cls
        return cls

    return register


TEMPERATURE = Check(lambda value: value > 0, "a positive temperature")
EMA_MOMENTUM = within("[0, 1]", "an EMA momentum")


def check_ema_final(key: str, momentum: float, momentum_final: float) -> None:
    """An EMA's momentum rises from ``momentum`` to ``momentum_final``, at most 1."""
    if not momentum <= momentum_final <= 1.0:
        raise ConfigError(
            f"config key '{key}.momentum_final': expected a momentum between {key}.momentum ({momentum}) and 1, "
            f"found {momentum_final}"
        )


@register_method("vicreg")
@dataclass
class VicregConfig:
    """VICReg's loss weights (the paper's 25 / 25 / 1)."""

    sim_weight: Annotated[float, NON_NEGATIVE] = 25.0
    var_weight: Annotated[float, NON_NEGATIVE] = 25.0
    cov_weight: Annotated[float, NON_NEGATIVE] = 1.0


@register_method("simclr")
@dataclass
class SimclrConfig:
    temperature: Annotated[float, TEMPERATURE] = 0.15


@register_method("barlow_twins")
@dataclass
class BarlowTwinsConfig:
    lambda_off_diagonal: Annotated[float, NON_NEGATIVE] = 0.0051


@register_method("byol")
@dataclass
class ByolConfig:
    """Predictor width and the EMA target's momentum, raised along a cosine from `momentum` to `momentum_final`."""

    predictor_hidden: Annotated[int, at_least(1, "a positive width"), at_most(65_536, "a width")] = 512
    momentum: Annotated[float, EMA_MOMENTUM] = 0.996
    momentum_final: float = 1.0

    def check(self, key: str) -> None:
        check_ema_final(key, self.momentum, self.momentum_final)


@register_method("dino")
@dataclass
class DinoConfig:
    """DINO's prototypes, temperatures (teacher warmed up linearly), centring and EMA teacher."""

    out_dim: Annotated[int, at_least(1, "a positive number of prototypes"), at_most(1_048_576, "a number of prototypes")] = 1024
    # Prototypes of unit length (logits are cosines: stable, but at small scale too flat to sharpen), or free.
    norm_last_layer: bool = True
    student_temp: Annotated[float, TEMPERATURE] = 0.1
    teacher_temp: Annotated[float, TEMPERATURE] = 0.07
    warmup_teacher_temp: Annotated[float, TEMPERATURE] = 0.04
    warmup_teacher_temp_epochs: Annotated[int, NON_NEGATIVE] = 50
    center_momentum: Annotated[float, within("[0, 1]", "a momentum")] = 0.9
    momentum: Annotated[float, EMA_MOMENTUM] = 0.996
    momentum_final: float = 1.0
    # Multi-crop: this many extra small views (side `local_crop_size`, 0: input_size // 2), students only.
    local_crops: Annotated[int, NON_NEGATIVE, at_most(64, "a number of views")] = 0
    local_crop_size: Annotated[int, at_least(0, "0 (half the input) or a positive side"), at_most(2048, "a side")] = 0
    local_crop_scale: Annotated[list[float], pair_within("(0, 1]")] = field(default_factory=lambda: [0.05, 0.4])

    def check(self, key: str) -> None:
        check_ema_final(key, self.momentum, self.momentum_final)


@register_method("supervised")
@dataclass
class SupervisedConfig:
    """The supervised baseline: a linear classifier on the projector, cross-entropy on one augmented view."""

    label_smoothing: Annotated[float, within("[0, 1)", "a value")] = 0.0


@register_method("clip")
@dataclass
class ClipConfig:
    """CLIP (vision-language): a text transformer (open_clip's) beside the image encoder, whose output is the
    joint space; the symmetric InfoNCE loss with a learnable temperature. Trains on image-caption pairs."""

    # Initial temperature of the logits (CLIP: 0.07), learnt unless `learn_temperature` is false.
    temperature: Annotated[float, TEMPERATURE] = 0.07
    learn_temperature: bool = True
    text_width: Annotated[int, at_least(8, "a width of at least 8"), at_most(4096, "a width")] = 128
    text_layers: Annotated[int, at_least(1, "at least one layer"), at_most(48, "a number of layers")] = 2
    text_heads: Annotated[int, at_least(1, "at least one head"), at_most(64, "a number of heads")] = 4
    # Tokens per caption (longer captions are cut; CLIP: 77).
    context_length: Annotated[int, at_least(4, "at least 4 tokens"), at_most(512, "a number of tokens")] = 32
    # Caption masking, the follow-up's best mitigation: each word token of a caption is dropped with this
    # probability at every training step (0: off).
    caption_mask: Annotated[float, within("[0, 1)", "a probability")] = 0.0

    def check(self, key: str) -> None:
        if self.text_width % self.text_heads:
            raise ConfigError(f"config key '{key}.text_width' = {self.text_width} is not divisible by "
                              f"{key}.text_heads = {self.text_heads}: each head takes an equal share")


# The methods; each has a section of `train` named after it, and only the selected one is part of a recipe.
METHOD_NAMES = tuple(METHOD_CONFIGS)
MethodName = Literal[METHOD_NAMES]  # type: ignore[valid-type]  # built from the registry


def with_method_sections(after: str):
    """Class decorator (under ``@dataclass``): a field per registered method, named after it, after ``after``."""

    def insert(cls: type) -> type:
        fields = list(cls.__dict__.get("__annotations__", {}).items())
        at = [name for name, _ in fields].index(after) + 1
        sections = list(METHOD_CONFIGS.items())
        cls.__annotations__ = dict(fields[:at] + sections + fields[at:])
        for name, settings in sections:
            setattr(cls, name, field(default_factory=settings))
        return cls

    return insert
