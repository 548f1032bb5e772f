from pathlib import Path

import pytest

from dejavu.config import Config, load_config, parse_overrides
from dejavu.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_demo_yaml_equals_builtin_defaults():
    assert load_config(ROOT / "configs" / "demo.yaml").to_dict() == Config().to_dict()


def test_paper_and_example_presets_load_once_given_a_root():
    presets = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
    assert [p.stem for p in presets] == sorted(["vicreg", "simclr", "barlow_twins", "byol", "dino", "supervised"])
    for preset in presets:
        paper = load_config(preset, ["data.root=/data/train"])
        assert paper.train.method == preset.stem
        assert (paper.split.scheme, paper.split.a_per_class, paper.split.public_from_per_class) == ("paper", 300, 500)
        assert (paper.crop.rule, paper.crop.min_side_px) == ("paper", 100)
        assert (paper.train.backbone, paper.train.optimizer, paper.train.epochs) == ("resnet101", "lars", 1000)
        assert paper.train.checkpoint_every == 50
    tiny = load_config(ROOT / "configs" / "examples" / "tiny.yaml", ["data.root=/x"])
    assert tiny.data.dataset == "imagenet"
    with pytest.raises(ConfigError, match="data.root"):
        load_config(ROOT / "configs" / "examples" / "tiny.yaml")


def test_smoke_yaml_loads():
    cfg = load_config(ROOT / "configs" / "smoke.yaml")
    assert cfg.train.epochs < Config().train.epochs


def test_dotted_overrides_are_typed():
    cfg = load_config(None, ["train.epochs=5", "attack.k=50", "train.lr=0.01", "train.widths=[8,16]",
                             "train.projector=64-64", "data.background_detail=false"])
    assert (cfg.train.epochs, cfg.attack.k, cfg.train.lr) == (5, 50, 0.01)
    assert cfg.train.widths == [8, 16] and cfg.train.projector == "64-64"
    assert cfg.data.background_detail is False


def test_override_wins_over_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\nattack:\n  k: 10\n")
    cfg = load_config(path, ["attack.k=20"])
    assert cfg.train.epochs == 7 and cfg.attack.k == 20


def test_parse_overrides_nests():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.epoch=5"], "unknown config key 'train.epoch'"),
        (["trian.epochs=5"], "unknown config key 'trian'"),
        (["train.epochs=five"], "'train.epochs': expected an integer"),
        (["train.epochs=2.5"], "'train.epochs': expected an integer"),
        (["attack.k=6000"], "'attack.k' = 6000 is larger than the public set X"),
        (["crop.min_side_px=65"], "'crop.min_side_px' = 65 is larger than the image"),
        (["split.x_per_class=700"], "split sizes do not fit the dataset"),
        (["train.projector=512-abc"], "'train.projector'"),
        (["train.backbone=vgg"], "unknown value 'vgg'; valid: convnet, resnet18"),
        (["attack.layer=head"], "'attack.layer'"),
        (["data.scene_correlation=1.5"], "'data.scene_correlation'"),
        (["train.epochs"], "expected KEY=VALUE"),
        (["data=3"], "'data': expected a mapping"),
        # Values that would otherwise fail later, mid-run, with a traceback:
        (["train.batch_size=1"], "'train.batch_size': expected at least 2"),
        (["train.warmup_epochs=-1"], "'train.warmup_epochs'"),
        (["data.input_size=8"], "'data.input_size' = 8 is too small"),
        (["seed=-1"], "'seed'"),
        (["threads=-1"], "'threads'"),
        (["train.weight_decay=-1"], "'train.weight_decay'"),
        (["train.augment.flip_p=1.5"], "'train.augment.flip_p'"),
        (["train.augment.jitter=[0.4,-0.4,0.2,0.1]"], "'train.augment.jitter'"),
        (["split.b_per_class=11"], "must be equal"),
        (["report.gallery=-1"], "'report.gallery'"),
    ],
)
def test_bad_config_is_reported_with_its_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in str(info.value)


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n  colour: red\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "bad.yaml" in str(info.value) and "train.colour" in str(info.value)
    assert "valid keys:" in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_override_errors_do_not_blame_the_file(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("train:\n  epochs: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.projector=[1]"])
    assert "ok.yaml" not in str(info.value) and "train.projector" in str(info.value)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_config_choices_name_exactly_what_the_code_builds():
    """config.CHOICES is spelled out (importing torchvision to build the CLI would slow every command); it
    must list exactly the backbones, stems, optimisers and methods the code knows."""
    from dejavu.config import CHOICES
    from dejavu.models.backbones import BACKBONES, STEMS
    from dejavu.train.methods import METHODS
    from dejavu.train.optim import OPTIMIZERS

    assert CHOICES["train.backbone"] == BACKBONES
    assert CHOICES["train.stem"] == STEMS
    assert CHOICES["train.optimizer"] == OPTIMIZERS
    assert CHOICES["train.method"] == tuple(METHODS)
