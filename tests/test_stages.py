"""Stage declarations: every config key a stage reads is declared, fingerprints follow exactly the declared
keys, and the run order, dependencies, reuse and CLI commands are derived from the declarations."""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from dejavu.cli import _parser
from dejavu.config import load_config
from dejavu.runs import Run
from dejavu.stages import COMMANDS, STAGES, fingerprint, run_stage
from dejavu.config import NO_EFFECT_KEYS
from dejavu.stages.declaration import ALL, effective_tree, lookup
from dejavu.stages.registry import upstream_of

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"
CLIP_SMOKE = SMOKE.with_name("clip_smoke.yaml")


@lru_cache(maxsize=None)
def _recording_class(cls: type, prefix: str) -> type:
    """A subclass of the config dataclass ``cls`` that logs every leaf field read as ``prefix + name``."""
    names = {f.name for f in dataclasses.fields(cls)}

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if name in names and not dataclasses.is_dataclass(value):
            type(self).log.add(prefix + name)
        return value

    return type(f"Recording{cls.__name__}", (cls,), {"__getattribute__": __getattribute__, "log": None})


def recording(config: Any, log: set[str], prefix: str = "") -> Any:
    """A copy of ``config`` (the same values, still an instance of each dataclass) whose reads go to ``log``."""
    cls = _recording_class(type(config), prefix)
    cls.log = log
    copy = object.__new__(cls)
    for name, value in vars(config).items():
        if dataclasses.is_dataclass(value):
            value = recording(value, log, f"{prefix}{name}.")
        object.__setattr__(copy, name, value)
    return copy


def _leaves(tree: Any, prefix: str) -> set[str]:
    if isinstance(tree, dict):
        return {leaf for name, value in tree.items() for leaf in _leaves(value, f"{prefix}{name}.")}
    return {prefix[:-1]}


def allowed_keys(stage, config) -> set[str]:
    """The leaf keys a stage may read: those under its declared keys (as the config acts: the sections
    of methods not selected excluded, unless the stage declares the whole config), those it reads without
    effect, and those that change no result anywhere."""
    tree = effective_tree(config)
    allowed = set(NO_EFFECT_KEYS) | set(stage.also_reads)
    for key in stage.keys:
        if key == ALL:
            allowed |= _leaves(dataclasses.asdict(config), "")
        elif lookup(tree, key) is None:
            # A section that does not act (no audit: model.*): the stage reads the keys that say so.
            allowed |= _leaves(lookup(dataclasses.asdict(config), key), f"{key}.")
        else:
            allowed |= _leaves(lookup(tree, key), f"{key}.")
    return allowed


@pytest.fixture(scope="module")
def reads_per_stage(tmp_path_factory):
    """Run every stage of the smoke config once with a config that records what each stage reads."""
    config = load_config(SMOKE, ["threads=1"])
    run = Run(tmp_path_factory.mktemp("reads") / "run", config)
    run.claim()
    reads = {}
    # The one-model test's stage runs under an audit of model A alone (trained by then, in the same folder).
    one_model = load_config(SMOKE, ["threads=1", f"model.target={run.root / 'models/A/model.safetensors'}"])
    # The reconstruct stage runs with reconstruct.enabled (smoke's tiny decoders).
    reconstructing = load_config(SMOKE, ["threads=1", "reconstruct.enabled=true"])
    # The vision-language stage runs in a CLIP run of its own (captioned data, CLIP models).
    clip = load_config(CLIP_SMOKE, ["threads=1"])
    clip_run = Run(tmp_path_factory.mktemp("reads_clip") / "run", clip)
    clip_run.claim()
    chosen_configs = {}
    for stage in STAGES:
        log: set[str] = set()
        chosen = next((c for c in (config, reconstructing, one_model) if stage.needed(c)), clip)
        where = run if chosen is not clip else clip_run
        for name in upstream_of([stage.name]) if where is clip_run else ():
            run_stage(clip_run, name, log=lambda _: None)
        where.config = recording(chosen, log)
        try:
            run_stage(where, stage.name, log=lambda _: None)
        finally:
            where.config = chosen
        reads[stage.name], chosen_configs[stage.name] = log, chosen
    return config, reads, run.root, chosen_configs


def test_recording_config_sees_reads_and_keeps_values():
    config = load_config(SMOKE)
    log: set[str] = set()
    copy = recording(config, log)
    assert copy.train.epochs == config.train.epochs and copy.attack.k == 20
    assert dataclasses.asdict(copy) == dataclasses.asdict(config)
    assert {"train.epochs", "attack.k", "train.vicreg.sim_weight"} <= log
    assert effective_tree(copy) == effective_tree(config)


@pytest.mark.parametrize("stage", STAGES, ids=lambda stage: stage.name)
def test_every_key_a_stage_reads_is_declared(reads_per_stage, stage):
    _, reads, _, configs = reads_per_stage
    undeclared = sorted(reads[stage.name] - allowed_keys(stage, configs[stage.name]))
    assert not undeclared, (
        f"stage '{stage.name}' reads config keys it does not declare: {undeclared}; add them to its Stage(keys=...) "
        "(or to also_reads, with the reason they change nothing it writes)"
    )


@pytest.mark.parametrize("stage", STAGES, ids=lambda stage: stage.name)
def test_every_declared_key_is_read(reads_per_stage, stage):
    """No stage declares a section it never reads (its fingerprint would change for nothing)."""
    _, reads, _, _ = reads_per_stage
    for key in stage.keys:
        under = "" if key == ALL else key
        assert any(read == under or read.startswith(f"{under}.") or not under for read in reads[stage.name]), \
            f"stage '{stage.name}' declares '{key}' but read none of it"
    for key in stage.also_reads:
        assert key in reads[stage.name], f"stage '{stage.name}' lists '{key}' in also_reads but never read it"


def _prints(overrides: list[str], tmp_path: Path) -> dict[str, str]:
    run = Run(tmp_path / "unclaimed", load_config(SMOKE, overrides))
    return {stage.name: fingerprint(stage, run) for stage in STAGES}


def test_a_stage_fingerprint_follows_exactly_its_declared_keys(tmp_path):
    base = _prints([], tmp_path)
    changed = {
        # neighbours (and the CLIP test's retrieval) depend on the backend
        "attack.backend=torch": {"neighbours", "evaluate", "vlm", "report"},
        "attack.k=10": {"neighbours", "reconstruct", "report"},  # reconstruct checks the neighbours' files
        "reconstruct.steps=5": {"reconstruct", "report"},
        "metrics.alpha=0.05": {"metrics", "vlm", "report"},
        "crop.min_side_px=10": {"crops", "correlation", "report"},  # (the classifier's: used by one-model audits)
        "correlation.epochs=3": {"report"},  # the classifier acts only in the one-model test (the report shows it)
        "train.lr=0.002": {"train_A", "train_B", "embed", "evaluate", "reconstruct", "vlm", "report"},
        "vlm.k=5": {"vlm", "report"},
        "data.caption_objects=2": {"report"},  # the captioned dataset's keys act on it alone
        "evaluate.knn_k=5": {"evaluate", "report"},
        "train.dino.out_dim=64": {"report"},  # a method not selected: only the report, which shows the config
        "threads=1": set(),
        "data.workers=0": set(),
        "train.resume_every_s=5": set(),
        "report.gallery=3": {"report"},
        # The last epoch's weights are the final ones: embed and evaluate are shared with attack.epoch = 0.
        f"attack.epoch={load_config(SMOKE).train.epochs}": {"report"},
    }
    for overrides, expected in changed.items():
        now = _prints(overrides.split(), tmp_path)
        assert {name for name in base if now[name] != base[name]} == expected, overrides


def test_the_classifier_fingerprint_follows_its_keys_in_the_one_model_test(tmp_path):
    audit = "model.target=/weights/A.pth"
    base = _prints([audit], tmp_path)
    now = _prints([audit, "correlation.epochs=3"], tmp_path)
    assert {name for name in base if now[name] != base[name]} == {"correlation", "report"}


def test_fingerprints_chain_through_the_tokens_of_the_stages_read(tmp_path):
    run = Run(tmp_path / "r", load_config(SMOKE))
    run.claim()
    before = {stage.name: fingerprint(stage, run) for stage in STAGES}
    run.mark_done("split", "x", artifact="config.json")
    after = {stage.name: fingerprint(stage, run) for stage in STAGES}
    moved = {name for name in before if before[name] != after[name]}
    readers = {stage.name for stage in STAGES if "split" in stage.reads}
    assert moved == readers and {"crops", "train_A", "train_B", "evaluate"} <= moved


def test_cli_stage_commands_are_derived_from_the_declarations():
    assert COMMANDS["train"] == ["train_A", "train_B"]
    assert set(COMMANDS) == {stage.cli_command for stage in STAGES}
    subcommands = _parser()._subparsers._group_actions[0].choices
    assert set(COMMANDS) <= set(subcommands)


def test_stages_run_after_the_stages_they_read():
    seen: set[str] = set()
    for stage in STAGES:
        assert set(stage.reads) <= seen, stage.name
        seen.add(stage.name)
    names = [stage.name for stage in STAGES]
    assert len(names) == len(set(names))


def test_the_worked_examples_of_docs_design_md_still_apply():
    """docs/examples/add_a_stage.diff and add_a_method.diff are the real diffs docs/design.md shows; they
    must apply to today's tree (regenerate them when the files they touch change)."""
    import subprocess

    root = SMOKE.parent.parent
    for name in ("add_a_stage.diff", "add_a_method.diff"):
        result = subprocess.run(["git", "apply", "--check", str(root / "docs" / "examples" / name)],
                                cwd=root, capture_output=True, text=True)
        assert result.returncode == 0, f"docs/examples/{name} no longer applies: {result.stderr}"


def test_neighbours_refuses_a_k_larger_than_the_public_set_it_finds(reads_per_stage, tmp_path):
    """A sweep point may adopt a split made for a smaller attack.k: the neighbours stage checks k itself."""
    import shutil

    from dejavu.errors import DataError

    config, _, root, _ = reads_per_stage
    shutil.copytree(root, tmp_path / "run")
    public = config.split.x_per_class * config.data.n_classes
    run = Run(tmp_path / "run", dataclasses.replace(config, attack=dataclasses.replace(config.attack, k=public + 1)))
    with pytest.raises(DataError, match=rf"'attack.k' = {public + 1} is larger than the public set X \({public} "):
        run_stage(run, "neighbours", force=True, log=lambda _: None)
