"""The training methods: which views each sees, which heads and teacher it owns, how its loss is formed.

A method is an ``nn.Module`` whose ``forward(views, labels, step)`` returns the loss, so that one
DDP wrapper covers every trainable part and one ``state_dict`` is the whole resume state. The
losses themselves are pure functions in :mod:`dejavu.losses`; per-iteration schedules (EMA momentum,
DINO's teacher temperature) are arrays computed once here and indexed by ``step``.

``encoder`` is what the attack embeds: the online network, except for DINO whose teacher is the
network it evaluates (as in DINO's paper).

Adding a method takes its loss (``dejavu/losses/<name>.py``), its settings (a dataclass registered in
:mod:`dejavu.config.methods`, which makes ``train.method=<name>`` valid and adds ``train.<name>``), and
here a ``Method`` subclass reading ``self.config.<name>`` plus its entry in ``METHODS``; nothing else.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dejavu.config import TrainConfig
from dejavu.losses.barlow import barlow_twins_loss
from dejavu.losses.byol import byol_loss
from dejavu.losses.clip import clip_loss
from dejavu.losses.dino import dino_loss, teacher_temperatures, update_center
from dejavu.losses.simclr import nt_xent_loss
from dejavu.losses.supervised import supervised_loss
from dejavu.losses.vicreg import vicreg_loss
from dejavu.models.encoder import Encoder, build_encoder
from dejavu.models.heads import Prototypes, predictor
from dejavu.models.text import build_text_encoder, mask_tokens
from dejavu.distributed import gather
from dejavu.train.ema import ema_update, momentum_schedule


def full_precision(tensor: torch.Tensor):
    """Losses run in float32 even under autocast: casting inputs alone is not enough, autocast would
    recast the covariance and correlation matmuls to bf16 (1/256 resolution on Barlow Twins' diagonal)."""
    return torch.autocast(tensor.device.type, enabled=False)


# One view spec per view: (side in pixels, crop area range or None for train.augment.crop_scale).
ViewSpec = tuple[int, "tuple[float, float] | None"]


class Method(nn.Module):
    """Base: an online encoder, two global views."""

    needs_labels = False
    # Trains on image-caption pairs: the loop's "labels" are the captions' token ids (N, context length).
    needs_captions = False

    def __init__(self, config: TrainConfig, input_size: int, epochs: int, steps_per_epoch: int, n_classes: int):
        super().__init__()
        self.config = config
        self.online = build_encoder(config, input_size)
        self.views: list[ViewSpec] = [(input_size, None), (input_size, None)]

    @property
    def encoder(self) -> Encoder:
        return self.online

    def embed_pair(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Both views' embeddings over the global batch, in float32."""
        return gather(self.online(views[0]).float()), gather(self.online(views[1]).float())

    def after_step(self, step: int) -> None:
        """Work after the optimiser step (EMA teachers)."""

    def companions(self) -> dict[str, nn.Module]:
        """Trained parts saved beside the encoder as ``<name>.safetensors`` (CLIP's text encoder)."""
        return {}


class VICReg(Method):
    def forward(self, views, labels, step):
        w = self.config.vicreg
        z_a, z_b = self.embed_pair(views)
        with full_precision(z_a):
            return vicreg_loss(z_a, z_b, sim_weight=w.sim_weight, var_weight=w.var_weight, cov_weight=w.cov_weight)


class SimCLR(Method):
    def forward(self, views, labels, step):
        z_a, z_b = self.embed_pair(views)
        with full_precision(z_a):
            return nt_xent_loss(z_a, z_b, temperature=self.config.simclr.temperature)


class BarlowTwins(Method):
    def forward(self, views, labels, step):
        z_a, z_b = self.embed_pair(views)
        with full_precision(z_a):
            return barlow_twins_loss(z_a, z_b, lambda_off_diagonal=self.config.barlow_twins.lambda_off_diagonal)


def _frozen_copy(module: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(module)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


class BYOL(Method):
    """Online encoder + predictor regress the EMA target's embedding of the other view."""

    def __init__(self, config, input_size, epochs, steps_per_epoch, n_classes):
        super().__init__(config, input_size, epochs, steps_per_epoch, n_classes)
        width = self.online.out_features
        self.predictor = predictor(width, config.byol.predictor_hidden, width)
        self.target = _frozen_copy(self.online)
        self.momentum = momentum_schedule(config.byol.momentum, config.byol.momentum_final, epochs * steps_per_epoch)

    def forward(self, views, labels, step):
        online = [self.predictor(self.online(view)).float() for view in views[:2]]
        with torch.no_grad():
            target = [self.target(view).float() for view in views[:2]]
        with full_precision(online[0]):
            return byol_loss(online[0], target[1]) + byol_loss(online[1], target[0])

    def after_step(self, step):
        ema_update(self.target, self.online, float(self.momentum[step]))


class DINO(Method):
    """Student (all views) matches the centred, sharpened EMA teacher (global views) over prototypes."""

    def __init__(self, config, input_size, epochs, steps_per_epoch, n_classes):
        super().__init__(config, input_size, epochs, steps_per_epoch, n_classes)
        d = config.dino
        self.prototypes = Prototypes(self.online.out_features, d.out_dim, norm_last_layer=d.norm_last_layer)
        self.teacher = _frozen_copy(self.online)
        self.teacher_prototypes = _frozen_copy(self.prototypes)
        self.register_buffer("center", torch.zeros(1, d.out_dim))
        local_side = d.local_crop_size or max(8, input_size // 2)
        self.views += [(local_side, tuple(d.local_crop_scale))] * d.local_crops
        self.momentum = momentum_schedule(d.momentum, d.momentum_final, epochs * steps_per_epoch)
        self.teacher_temp = teacher_temperatures(
            d.warmup_teacher_temp, d.teacher_temp, d.warmup_teacher_temp_epochs, epochs, steps_per_epoch
        )

    @property
    def encoder(self) -> Encoder:
        return self.teacher

    def forward(self, views, labels, step):
        d = self.config.dino
        student = [self.prototypes(self.online(view)).float() for view in views]
        with torch.no_grad():
            teacher = [self.teacher_prototypes(self.teacher(view)).float() for view in views[:2]]
        with full_precision(student[0]):
            loss = dino_loss(student, teacher, self.center, student_temp=d.student_temp,
                             teacher_temp=float(self.teacher_temp[step]))
            self.center.copy_(update_center(self.center, teacher, d.center_momentum))
        return loss

    def after_step(self, step):
        momentum = float(self.momentum[step])
        ema_update(self.teacher, self.online, momentum)
        ema_update(self.teacher_prototypes, self.prototypes, momentum)


class Supervised(Method):
    """The paper's supervised baseline: same backbone and projector, a linear classifier, cross-entropy."""

    needs_labels = True

    def __init__(self, config, input_size, epochs, steps_per_epoch, n_classes):
        super().__init__(config, input_size, epochs, steps_per_epoch, n_classes)
        if n_classes < 2:
            raise ValueError("the supervised method needs the training images' labels (n_classes >= 2)")
        self.classifier = nn.Linear(self.online.out_features, n_classes)
        self.views = self.views[:1]

    def forward(self, views, labels, step):
        logits = self.classifier(self.online(views[0])).float()
        with full_precision(logits):
            return supervised_loss(logits, labels, label_smoothing=self.config.supervised.label_smoothing)


class CLIP(Method):
    """Image encoder and text encoder trained to match each image with its own caption in the batch; one
    view of the image (CLIP's light crop), its caption's tokens (masked when ``caption_mask`` is set)."""

    needs_labels = True
    needs_captions = True

    def __init__(self, config, input_size, epochs, steps_per_epoch, n_classes):
        super().__init__(config, input_size, epochs, steps_per_epoch, n_classes)
        self.text = build_text_encoder(config.clip, self.online.out_features)
        self.views = self.views[:1]

    def companions(self) -> dict[str, nn.Module]:
        return {"text": self.text}

    def forward(self, views, tokens, step):
        if self.training:
            tokens = mask_tokens(tokens, self.config.clip.caption_mask)
        image = gather(self.online(views[0]).float())
        text = gather(self.text(tokens).float())
        with full_precision(image):
            return clip_loss(image, text, log_scale=self.text.logit_scale)


METHODS: dict[str, type[Method]] = {
    "vicreg": VICReg, "simclr": SimCLR, "barlow_twins": BarlowTwins,
    "byol": BYOL, "dino": DINO, "supervised": Supervised, "clip": CLIP,
}


def build_method(config: TrainConfig, input_size: int, epochs: int, steps_per_epoch: int, n_classes: int = 0) -> Method:
    """The method named by ``config.method`` (config.METHOD_NAMES, which a test keeps equal to ``METHODS``)."""
    return METHODS[config.method](config, input_size, epochs, steps_per_epoch, n_classes)
