import ast
import dataclasses
import doctest
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from dejavu.config import (
    METHOD_CONFIGS, METHOD_NAMES, Config, TrainConfig, choices, load_config, parse_overrides, validate,
)
from dejavu.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_demo_yaml_equals_builtin_defaults():
    assert load_config(ROOT / "configs" / "demo.yaml").to_dict() == Config().to_dict()


def test_paper_and_example_presets_load_once_given_a_root():
    # paper/clip_coco is the follow-up's (Jayaraman et al. 2024) CLIP preset: checked below.
    presets = sorted(p for p in (ROOT / "configs" / "paper").glob("*.yaml") if p.stem != "clip_coco")
    assert [p.stem for p in presets] == sorted(["vicreg", "simclr", "barlow_twins", "byol", "dino", "supervised",
                                                "reconstruct"])
    clip = load_config(ROOT / "configs" / "paper" / "clip_coco.yaml")
    assert (clip.train.method, clip.train.backbone, clip.train.patch_size, clip.data.input_size) == (
        "clip", "vit_base", 32, 224)  # ViT-B/32
    assert clip.data.dataset == "coco" and clip.data.captions.endswith("captions_train2017.json")
    for preset in presets:
        paper = load_config(preset, ["data.root=/data/train"])
        # paper/reconstruct is the VICReg recipe with the paper's 128-px decoder.
        assert paper.train.method == ("vicreg" if preset.stem == "reconstruct" else preset.stem)
        assert paper.reconstruct.enabled == (preset.stem == "reconstruct")
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


@pytest.mark.parametrize(
    "overrides, meant",
    [
        (["train.epoch=5"], "train.epochs"),          # a near name in the same section
        (["trian.epochs=5"], "train.epochs"),         # a misspelled section, followed into its keys
        (["trian.epoch=5"], "train.epochs"),
        (["epochs=5"], "train.epochs' or 'correlation.epochs"),  # a key of two sections given at the top level
        (["k=5"], "attack.k' or 'vlm.k"),  # both sections have a k
        (["train.vicreg.sim_weigth=3"], "train.vicreg.sim_weight"),
        (["metrics.aplha=0.1"], "metrics.alpha"),
    ],
)
def test_unknown_key_suggests_the_nearest_valid_one(overrides, meant):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert f"did you mean '{meant}'?" in str(info.value)


def test_unknown_key_far_from_any_gets_no_guess():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.colour=red"])
    assert "did you mean" not in str(info.value) and "valid keys: dataset" in str(info.value)


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 3\n  colour: red\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "bad.yaml" in str(info.value) and "train.colour" in str(info.value)
    assert "valid keys:" in str(info.value)
    path.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'trian' .*did you mean 'train.epochs'\?"):
        load_config(path)


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
    """The Literal choices of train.backbone / stem / optimizer / method must be exactly what the code builds
    (the config layer imports no model code, so the two lists are compared here)."""
    from dejavu.models.backbones import BACKBONES, STEMS
    from dejavu.train.methods import METHODS
    from dejavu.train.optim import OPTIMIZERS

    assert choices("train.backbone") == BACKBONES
    assert choices("train.stem") == STEMS
    assert choices("train.optimizer") == OPTIMIZERS
    assert choices("train.method") == METHOD_NAMES == tuple(METHODS)
    assert choices("data.dataset") == ("scenes", "captioned_scenes", "imagenet", "voc", "coco", "manifest")
    with pytest.raises(KeyError, match="train.epochs"):
        choices("train.epochs")


def test_method_sections_come_from_the_method_registry():
    """Each registered method has its section in train (after sync_batchnorm), checked by its own bounds."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    at = names.index("sync_batchnorm") + 1
    assert tuple(names[at:at + len(METHOD_CONFIGS)]) == METHOD_NAMES == tuple(METHOD_CONFIGS)
    for name, settings in METHOD_CONFIGS.items():
        assert isinstance(getattr(TrainConfig(), name), settings)
    with pytest.raises(ConfigError, match=r"'train.byol.momentum_final': expected a momentum between "
                                          r"train.byol.momentum \(0.9\) and 1, found 0.5"):
        load_config(None, ["train.byol.momentum=0.9", "train.byol.momentum_final=0.5"])
    # Every section is checked, the methods not selected too.
    with pytest.raises(ConfigError, match=r"'train.supervised.label_smoothing': expected a value in \[0, 1\)"):
        load_config(None, ["train.supervised.label_smoothing=1"])


@pytest.mark.parametrize("override, message", [
    ("data.image_size=0", "config key 'data.image_size': expected a positive integer, found 0"),
    ("data.image_size=8", "config key 'data.image_size': expected at least 16 pixels, found 8"),
    ("train.batch_size=0", "config key 'train.batch_size': expected a positive integer, found 0"),
    ("crop.corner_fraction=0", "config key 'crop.corner_fraction': expected a fraction in (0, 1], found 0.0"),
    ("metrics.alpha=1", "config key 'metrics.alpha': expected a level in (0, 1), found 1.0"),
    ("train.momentum=1", "config key 'train.momentum': expected a momentum in [0, 1), found 1.0"),
    ("split.near_duplicate_distance=16", "config key 'split.near_duplicate_distance': expected -1 (off) to 15 bits"),
    ("train.augment.crop_scale=[0.5,0.2]", "'train.augment.crop_scale': expected [low, high] in (0, 1], found [0.5,"),
    ("train.dino.local_crop_scale=[0,0.2]", "'train.dino.local_crop_scale': expected [low, high] in (0, 1]"),
    ("train.widths=[]", "config key 'train.widths': expected 1 to 16 positive channel widths of at most 16,384, found []"),
    ("train.lr=0", "config key 'train.lr': expected a positive learning rate, found 0.0"),
    ("data.dataset=yolo", "'data.dataset': unknown value 'yolo'; valid: scenes, captioned_scenes, imagenet, voc, coco, manifest"),
    ("train.precision=fp8", "config key 'train.precision': unknown value 'fp8'; valid: fp32, bf16, fp16"),
    ("train.method=5", "config key 'train.method': expected a string, found 5"),
])
def test_declared_bounds_and_choices_keep_their_messages(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_a_programmatic_config_is_checked_like_a_loaded_one():
    config = Config()
    config.train.optimizer = "adam"
    with pytest.raises(ConfigError, match="'train.optimizer': unknown value 'adam'; valid: adamw, sgd, lars"):
        validate(config)
    config.train.optimizer = "sgd"
    config.evaluate.knn_k = 0
    with pytest.raises(ConfigError, match="'evaluate.knn_k': expected a positive integer, found 0"):
        validate(config)


def test_a_choice_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  backbone: vgg\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: config key 'train.backbone': unknown value 'vgg'; valid: conv"):
        load_config(path)


def test_the_config_layer_imports_no_model_code():
    """dejavu.config imports nothing from dejavu but dejavu.errors (the models import its parsers instead)."""
    for source in sorted((ROOT / "src" / "dejavu" / "config").glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{source.name}: relative import"
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                if module.split(".")[0] in ("dejavu", "torch", "torchvision"):
                    assert module == "dejavu.errors" or module.startswith("dejavu.config"), f"{source.name}: {module}"
    code = "import sys, dejavu.config; print(sorted(m for m in sys.modules if m.startswith(('dejavu', 'torch'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    names = loaded.strip("[]\n").split(", ")
    assert not any(name.startswith(("'torch", "'dejavu.models", "'dejavu.train")) for name in names), names


@pytest.mark.parametrize("module", ["dejavu.config", "dejavu.config.schema", "dejavu.config.specs", "dejavu.config.shipped"])
def test_module_doctests(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
