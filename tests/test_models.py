"""Backbones, heads and the encoder's named layers, on real (tiny) forward and backward passes."""

import pytest
import torch
from torch import nn

from dejavu.errors import ConfigError
from dejavu.models.backbones import BACKBONES, STEMS, build_backbone, resnet18_small
from dejavu.config.specs import check_layer, layer_names
from dejavu.models.encoder import Encoder, build_encoder
from dejavu.models.heads import Prototypes, predictor, projector

EXPECTED_FEATURES = {
    "convnet": 8,
    "resnet18": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "vit_tiny": 192,
    "vit_small": 384,
    "vit_base": 768,
}


def _images(n=2, side=32, seed=0):
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_embeds_32px(name):
    torch.manual_seed(0)
    net = build_backbone(name, [4, 8], input_size=32).eval()
    with torch.no_grad():
        out = net(_images())
    assert net.out_features == EXPECTED_FEATURES[name]
    assert out.shape == (2, EXPECTED_FEATURES[name])
    assert torch.isfinite(out).all()


def test_backbone_list_is_complete():
    assert set(BACKBONES) == set(EXPECTED_FEATURES)
    assert STEMS == ("auto", "small", "imagenet")


def test_resnet_stems():
    small = build_backbone("resnet18", [], input_size=32, stem="small")
    assert small.conv1.stride == (1, 1) and small.conv1.kernel_size == (3, 3)
    assert isinstance(small.maxpool, nn.Identity)
    imagenet = build_backbone("resnet18", [], input_size=32, stem="imagenet")
    # The ImageNet stem halves the side twice before layer1: stride-2 conv then a stride-2 max-pool.
    assert imagenet.conv1.stride == (2, 2) and imagenet.conv1.kernel_size == (7, 7)
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)
    stem_out = imagenet.maxpool(imagenet.relu(imagenet.bn1(imagenet.conv1(_images()))))
    assert stem_out.shape[-2:] == (8, 8)
    assert build_backbone("resnet18", [], input_size=64).conv1.stride == (1, 1)
    assert build_backbone("resnet18", [], input_size=96).conv1.stride == (2, 2)


def test_resnet18_imagenet_stem_at_224px():
    net = build_backbone("resnet18", [], input_size=224).eval()
    with torch.no_grad():
        out = net(_images(1, 224))
    assert out.shape == (1, 512)


def _old_resnet18_small():
    # The construction before ResNet-50/101 and stems existed, in the same order (so the same RNG draws).
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def test_small_resnet18_is_unchanged():
    torch.manual_seed(0)
    old = _old_resnet18_small().state_dict()
    for build in (resnet18_small, lambda: build_backbone("resnet18", [], input_size=32)):
        torch.manual_seed(0)
        new = build().state_dict()
        assert list(new) == list(old)
        assert all(torch.equal(new[key], old[key]) for key in old)
    assert old["conv1.weight"].shape == (64, 3, 3, 3)
    assert not any(key.startswith("fc.") for key in old)


@pytest.mark.parametrize(("input_size", "patch"), [(32, 4), (64, 8), (16, 2), (128, 16), (224, 16)])
def test_vit_auto_patch_size(input_size, patch):
    net = build_backbone("vit_tiny", [], input_size=input_size)
    assert net.patch_size == patch
    assert net.conv_proj.stride == (patch, patch)


def test_vit_explicit_patch_size_and_its_input_size():
    net = build_backbone("vit_tiny", [], input_size=32, patch_size=8).eval()
    assert net.patch_size == 8 and net.seq_length == 16 + 1
    with torch.no_grad():
        assert net(_images()).shape == (2, 192)


def test_vit_patch_that_does_not_divide_the_input_raises():
    with pytest.raises(ConfigError, match=r"train\.patch_size.*5.*data\.input_size.*32.*train\.patch_size=4"):
        build_backbone("vit_tiny", [], input_size=32, patch_size=5)
    # Auto picks 100 // 8 = 12, which does not tile 100 px.
    with pytest.raises(ConfigError, match=r"auto -> 12.*data\.input_size' = 100"):
        build_backbone("vit_small", [], input_size=100)


def test_unknown_backbone_and_stem_list_the_valid_names():
    with pytest.raises(ConfigError, match=r"'train\.backbone': unknown backbone 'vgg'; valid: convnet, resnet18, .*vit_base"):
        build_backbone("vgg", [4])
    with pytest.raises(ConfigError, match=r"train\.stem.*'tiny'.*auto, small, imagenet"):
        build_backbone("resnet18", [], stem="tiny")


def test_projector_has_one_child_per_layer():
    head = projector(16, "32-24-8")
    assert len(head) == 3
    assert [type(block[0]) for block in head[:2]] == [nn.Linear, nn.Linear]
    assert isinstance(head[0][1], nn.BatchNorm1d) and isinstance(head[0][2], nn.ReLU)
    assert isinstance(head[2], nn.Linear)
    x = torch.randn(4, 16)
    widths = []
    for layer in head:
        x = layer(x)
        widths.append(x.shape[1])
    assert widths == [32, 24, 8]
    assert len(projector(128, "512-512")) == 2


def test_layer_names_and_check_layer():
    assert layer_names("512-512") == ["backbone", "projector1", "projector2", "projector"]
    assert layer_names("64") == ["backbone", "projector1", "projector"]
    check_layer("projector2", "512-512")
    check_layer("backbone", "512-512")
    with pytest.raises(ConfigError, match=r"attack\.layer' = 'projector3'.*backbone, projector1, projector2, projector"):
        check_layer("projector3", "512-512")
    with pytest.raises(ConfigError, match=r"attack\.layer' = 'foo'"):
        check_layer("foo", "512-512")
    with pytest.raises(ConfigError, match=r"attack\.layer' = 'projector0'"):
        check_layer("projector0", "512-512")


def test_embed_at_every_projector_layer():
    torch.manual_seed(0)
    encoder = Encoder("convnet", [4, 8], "16-12").train()
    # A training step fills the BatchNorm running statistics so eval differs from the fresh identity.
    encoder(_images(8, seed=1))
    encoder.eval()
    x = _images(3, seed=2)
    with torch.no_grad():
        features = encoder.backbone(x)
        first = encoder.projector[0](features)
        assert torch.equal(encoder.embed(x, "backbone"), features)
        assert encoder.embed(x, "projector1").shape == (3, 16)
        assert torch.allclose(encoder.embed(x, "projector1"), first)
        assert (encoder.embed(x, "projector1") >= 0).all()  # the block ends with its ReLU
        assert torch.allclose(encoder.embed(x, "projector"), encoder(x))
        assert torch.allclose(encoder.embed(x, "projector2"), encoder.embed(x, "projector"))
        assert encoder.embed(x, "projector").shape == (3, 12)
    assert encoder.out_features == 12
    with pytest.raises(ConfigError, match="attack.layer"):
        encoder.embed(x, "projector3")


def test_build_encoder_reads_stem_and_patch_size():
    class Train:
        backbone, widths, projector = "vit_tiny", [], "32-16"
        stem, patch_size = "auto", 8

    encoder = build_encoder(Train(), input_size=32)
    assert encoder.backbone.patch_size == 8 and encoder.out_features == 16

    class OldTrain:  # a config from before stem / patch_size existed
        backbone, widths, projector = "resnet18", [], "32-16"

    assert build_encoder(OldTrain(), input_size=96).backbone.conv1.stride == (2, 2)


def test_predictor_shape():
    head = predictor(16, 64, 8)
    assert [type(m) for m in head] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head(torch.randn(4, 16)).shape == (4, 8)


def test_prototypes_shape_and_frozen_magnitude():
    torch.manual_seed(0)
    frozen = Prototypes(16, 32)
    assert frozen(torch.randn(4, 16)).shape == (4, 32)
    magnitude = frozen.last_layer.parametrizations.weight.original0
    assert not magnitude.requires_grad
    assert torch.equal(magnitude, torch.ones_like(magnitude))
    # Unit-norm prototypes: every effective weight row has length 1.
    assert torch.allclose(frozen.last_layer.weight.norm(dim=1), torch.ones(32), atol=1e-6)
    assert frozen.last_layer.bias is None
    trainable = Prototypes(16, 32, norm_last_layer=False)
    assert trainable.last_layer.parametrizations.weight.original0.requires_grad
    assert sum(p.requires_grad for p in frozen.parameters()) == 1
    assert sum(p.requires_grad for p in trainable.parameters()) == 2


def test_prototypes_ignore_input_scale():
    torch.manual_seed(0)
    head = Prototypes(16, 32)
    x = torch.randn(4, 16)
    assert torch.allclose(head(x), head(7.5 * x), atol=1e-6)
    # Logits are cosines with unit prototypes, hence within [-1, 1].
    assert head(x).abs().max() <= 1 + 1e-6


def test_vit_tiny_training_step_updates_parameters():
    torch.manual_seed(0)
    encoder = Encoder("vit_tiny", [], "32-16", input_size=32).train()
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)
    z_a, z_b = encoder(_images(4, seed=3)), encoder(_images(4, seed=4))
    loss = ((z_a - z_b) ** 2).mean()
    loss.backward()
    optimizer.step()
    after = dict(encoder.named_parameters())
    changed = (
        "backbone.conv_proj.weight",
        "backbone.class_token",
        "backbone.encoder.layers.encoder_layer_0.self_attention.in_proj_weight",
        "projector.0.0.weight",
        "projector.1.weight",
    )
    for name in changed:
        assert not torch.equal(before[name], after[name].detach()), name
    assert torch.isfinite(loss)
