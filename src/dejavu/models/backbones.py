"""Backbones by name: a small CPU ConvNet, torchvision ResNets (small or ImageNet stem) and ViTs."""

from __future__ import annotations

import torch
from torch import nn

from dejavu.config.specs import resolve_patch_size
from dejavu.errors import ConfigError

STEMS = ("auto", "small", "imagenet")

# (num_layers, num_heads, hidden_dim, mlp_dim), the DeiT / ViT sizes.
_VIT_SIZES = {
    "vit_tiny": (12, 3, 192, 768),
    "vit_small": (12, 6, 384, 1536),
    "vit_base": (12, 12, 768, 3072),
}
_RESNETS = ("resnet18", "resnet50", "resnet101")
# What build_backbone builds (a test checks train.backbone's choices name exactly these).
BACKBONES = ("convnet", *_RESNETS, *_VIT_SIZES)


def _torchvision_models():
    import torchvision.models  # a second to import: ResNets and ViTs pay for it, not every command's start

    return torchvision.models


class ConvNet(nn.Module):
    """Conv3x3-BN-ReLU-MaxPool per width, then global average pooling.

    Why: ResNet-18 trains at ~50 img/s on 2 CPU cores at 32 px, this at >1,000 img/s, which is
    what makes a 1,000-epoch demo fit in minutes.
    """

    def __init__(self, widths: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for width in widths:
            layers += [
                nn.Conv2d(previous, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            previous = width
        self.features = nn.Sequential(*layers)
        self.out_features = previous

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).mean(dim=(2, 3))


def resnet(name: str = "resnet18", stem: str = "small") -> nn.Module:
    """torchvision ResNet without its classifier; ``stem="small"`` swaps in a 3x3 stride-1 conv and no max-pool.

    Why: the ImageNet stem divides the side by 4 before layer1, leaving a 32 px image 8x8 there
    and 1x1 after layer4, which loses most spatial detail on CIFAR-sized inputs.

    Example:
        >>> resnet("resnet50", "imagenet").out_features
        2048
    """
    net = getattr(_torchvision_models(), name)(weights=None)
    if stem == "small":
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif stem != "imagenet":
        raise ConfigError(f"config key 'train.stem': unknown stem {stem!r} for a ResNet; valid: small, imagenet")
    net.out_features = net.fc.in_features
    net.fc = nn.Identity()
    return net


def resnet18_small() -> nn.Module:
    """torchvision ResNet-18 with a 3x3 stride-1 stem and no max-pool (for 32-64 px inputs)."""
    return resnet("resnet18", "small")


def resolve_stem(stem: str, input_size: int) -> str:
    """``"auto"`` -> ``"small"`` up to 64 px, else ``"imagenet"``; unknown stems raise ConfigError.

    Example:
        >>> resolve_stem("auto", 32), resolve_stem("auto", 224)
        ('small', 'imagenet')
    """
    if stem not in STEMS:
        raise ConfigError(f"config key 'train.stem': unknown stem {stem!r}; valid: {', '.join(STEMS)}")
    if stem == "auto":
        return "small" if input_size <= 64 else "imagenet"
    return stem


def vit(name: str, input_size: int = 32, patch_size: int = 0) -> nn.Module:
    """torchvision VisionTransformer returning the class token (``out_features`` = hidden dim).

    It only accepts ``input_size`` x ``input_size`` images: torchvision checks the size at forward.

    Example:
        >>> vit("vit_tiny", 32).out_features
        192
    """
    num_layers, num_heads, hidden_dim, mlp_dim = _VIT_SIZES[name]
    net = _torchvision_models().VisionTransformer(
        image_size=input_size,
        patch_size=resolve_patch_size(patch_size, input_size),
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
    )
    net.heads = nn.Identity()
    net.out_features = hidden_dim
    return net


def build_backbone(
    name: str, widths: list[int], input_size: int = 32, stem: str = "auto", patch_size: int = 0
) -> nn.Module:
    """A backbone with an ``out_features`` attribute; unknown names list the valid ones.

    ``widths`` is used by the ConvNet only, ``stem`` by the ResNets, ``patch_size`` by the ViTs.

    Example:
        >>> build_backbone("resnet18", [], input_size=224).conv1.stride
        (2, 2)
    """
    # Checked for every backbone so that a typo fails now, not when someone later switches to a ResNet.
    resolved = resolve_stem(stem, input_size)
    if name == "convnet":
        return ConvNet(widths)
    if name in _RESNETS:
        return resnet(name, resolved)
    if name in _VIT_SIZES:
        return vit(name, input_size, patch_size)
    raise ConfigError(f"config key 'train.backbone': unknown backbone '{name}'; valid: {', '.join(BACKBONES)}")
