"""What a stage is: one declaration from which the run order, dependencies, fingerprints, reuse
between run folders and the CLI's stage commands all derive.

A stage's fingerprint is a hash of exactly the config keys it declares (and the derived seeds it
uses), chained with the completion tokens of the stages it reads. ``tests/test_stages.py`` runs every
stage with a config that records which keys are read and fails on a key a stage does not declare, so
a forgotten key cannot let a sweep adopt a stage computed with another value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dejavu.config import METHOD_NAMES, NO_EFFECT_KEYS, Config
from dejavu.runs import Run

ALL = "*"  # a stage that reads the whole config as saved, every method's section included (the report shows it)


# Read by stages that only ask which models a run has (both, or the target alone in the one-model test):
# the tokens of the stages they read already change with that.
WHICH_MODELS = {
    "model.target": "which models there are (one-model test or not); the stages it reads carry the change in their tokens",
    "model.reference": "which models there are (one-model test or not); the stages it reads carry the change in their tokens",
}

@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    - ``function(run) -> Path`` computes it and returns its main artifact (its marker points there).
    - ``reads``: the stages whose artifacts it reads (their new runs invalidate it).
    - ``keys``: dotted config keys (a section stands for all its keys) its output depends on.
    - ``seeds``: the derived seeds (``run.seeds``) it draws from.
    - ``also_reads``: keys it reads that change nothing it writes, each with the reason (speed, or a
      check that only refuses early); not part of the fingerprint.
    - ``outputs``: what it writes, relative to the run folder (a folder: everything under it but other
      stages' outputs); what a run folder may adopt from another.
    - ``command``: the CLI subcommand that re-runs it (stages sharing one run together).
    - ``adoptable``: whether a sweep point may take it from another point (the report names its own
      folder, so it is always written anew).
    - ``every_process``: in a distributed run every process runs it (training: each computes its share
      of the batch); other stages run on rank zero while the rest wait.
    - ``description``: one line for the user, what it computes (its outputs are added from ``outputs``):
      the help of its CLI command.
    - ``external``: what it reads from outside the run folder and the config, as ``config -> {name: value}``
      (an audited checkpoint's SHA-256): part of the fingerprint, so a replaced file is read again.
    - ``applies``: ``config -> bool``, whether the config needs the stage at all (the one-model test trains
      no reference; the correlation classifier exists only there); None: always. A stage that does not
      apply is not run, and the stages reading it see it as absent; ``unneeded`` says why, in the log.

    Example:
        >>> Stage("neighbours", stage_neighbours, reads=("embed",), keys=("attack.k", "attack.backend"),
        ...       outputs=("neighbours",))
    """

    name: str
    function: Callable[[Run], Path] = field(repr=False, compare=False)
    reads: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    seeds: tuple[str, ...] = ()
    also_reads: dict[str, str] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    command: str = ""
    adoptable: bool = True
    every_process: bool = False
    description: str = field(default="", compare=False)
    external: Callable[[Config], dict[str, Any]] | None = field(default=None, repr=False, compare=False)
    applies: Callable[[Config], bool] | None = field(default=None, repr=False, compare=False)
    unneeded: str = field(default="", compare=False)

    def needed(self, config: Config) -> bool:
        return self.applies is None or self.applies(config)

    @property
    def cli_command(self) -> str:
        return self.command or self.name


def effective_tree(config: Config) -> dict[str, Any]:
    """The config as it acts: the sections of methods not selected are dropped (they change nothing),
    and ``attack.epoch`` equal to ``train.epochs`` is the final weights, as 0 is.

    Built from the instances' ``__dict__`` so that computing a fingerprint is not itself a read."""
    tree = _tree(config)
    for method in METHOD_NAMES:
        if method != tree["train"]["method"]:
            tree["train"].pop(method)
    if tree["attack"]["epoch"] == tree["train"]["epochs"]:
        tree["attack"]["epoch"] = 0
    # The captioned data's keys act on that dataset (and data.captions once set) only: other runs keep the
    # fingerprints they had before the vision-language test existed.
    if tree["data"]["dataset"] != "captioned_scenes":
        for key in ("objects_per_image", "caption_objects"):
            tree["data"].pop(key)
    if not tree["data"]["captions"]:
        tree["data"].pop("captions")
    # Sections that do not act are None, and keys that are None are in no fingerprint: a run that trains
    # its models keeps the fingerprints it had before audits existed.
    if not (tree["model"]["target"] or tree["model"]["reference"]):  # (not ModelConfig.audited: no read)
        tree["model"] = None
    if not (tree["model"] and tree["model"]["target"] and not tree["model"]["reference"]):  # not one_model
        tree["correlation"] = None
    return tree


def _tree(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {name: _tree(item) for name, item in vars(value).items()}
    if isinstance(value, list):
        return [_tree(item) for item in value]
    return value


def lookup(tree: dict[str, Any], dotted: str) -> Any:
    """The value (or subtree) at a dotted key; KeyError naming the key when it does not exist."""
    node: Any = tree
    for part in dotted.split("."):
        if node is None:  # a section that does not act (effective_tree)
            return None
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"stage declares config key '{dotted}', which the config does not have")
        node = node[part]
    return node


def _without(subtree: Any, prefix: str, dropped: tuple[str, ...]) -> Any:
    """``subtree`` (at ``prefix``) without the leaves named in ``dropped``."""
    if not isinstance(subtree, dict):
        return subtree
    out = {}
    for name, value in subtree.items():
        key = f"{prefix}.{name}" if prefix and prefix != ALL else name
        if key not in dropped:
            out[name] = _without(value, key, dropped)
    return out


def _hash(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def own_fingerprint(stage: Stage, config: Config, seeds: dict[str, int]) -> str:
    """Hash of the stage's declared keys' values and seeds (keys it reads without effect excluded)."""
    tree = effective_tree(config)
    # Keys that change no result of any stage are in no fingerprint.
    dropped = (*NO_EFFECT_KEYS, *stage.also_reads)
    values = {key: _without(_tree(config) if key == ALL else lookup(tree, key), key, dropped) for key in stage.keys}
    values = {key: value for key, value in values.items() if value is not None}
    chosen = {name: seeds[name] for name in stage.seeds}
    parts = [stage.name, json.dumps(values, sort_keys=True), json.dumps(chosen, sort_keys=True)]
    if stage.external is not None:
        parts.append(json.dumps(stage.external(config), sort_keys=True))
    return _hash(*parts)


def fingerprint(stage: Stage, run: Run) -> str:
    """The stage's fingerprint in ``run``: its own keys and seeds, and the tokens of the runs of the
    stages it reads (so re-running one stage invalidates everything that read it)."""
    # A stage this config does not need (the reference's training in the one-model test, the classifier in
    # the two-model test) never completes: its "missing" token is left out, so declaring it as read changed
    # no fingerprint of a folder written before it existed.
    tokens = (run.token(name) for name in stage.reads)
    return _hash(own_fingerprint(stage, run.config, run.seeds), *(t for t in tokens if t != "missing"))
