"""Every stage, in execution order, and what derives from their declarations.

Adding a stage = a function and its :class:`~dejavu.stages.declaration.Stage` in a module of this
package, and its name in :data:`STAGES` below (after the stages it reads).
"""

from __future__ import annotations

from pathlib import Path

from dejavu.report.html import write_report
from dejavu.runs import Run
from dejavu.stages.attack import EMBED, NEIGHBOURS
from dejavu.stages.correlation import CORRELATION
from dejavu.stages.data import CROPS, DATA, SPLIT
from dejavu.stages.declaration import Stage
from dejavu.stages.evaluate import EVALUATE
from dejavu.stages.metrics import METRICS
from dejavu.stages.reconstruct import RECONSTRUCT
from dejavu.stages.sanity import SANITY
from dejavu.stages.train import TRAIN
from dejavu.stages.vlm import VLM


def stage_report(run: Run) -> Path:
    """``report.html`` and ``figures/`` from the run folder's artifacts (timings listed in stage order)."""
    return write_report(run, tuple(STAGE_BY_NAME))


REPORT = Stage(
    "report", stage_report,
    reads=("data", "split", "crops", "train_A", "train_B", "correlation", "evaluate", "sanity", "neighbours", "reconstruct",
           "vlm", "metrics"),
    keys=("*",), outputs=("report.html", "figures"), adoptable=False,
    description="the self-contained HTML report: verdict, accuracy curves, partition, statistics, control, gallery",
)

STAGES: tuple[Stage, ...] = (
    DATA, SPLIT, CROPS, TRAIN["A"], TRAIN["B"], CORRELATION, EMBED, EVALUATE, SANITY, NEIGHBOURS, RECONSTRUCT, VLM,
    METRICS, REPORT,
)
STAGE_BY_NAME = {stage.name: stage for stage in STAGES}
# CLI subcommand -> the stages it re-runs (train: both models).
COMMANDS: dict[str, list[str]] = {}
for _stage in STAGES:
    COMMANDS.setdefault(_stage.cli_command, []).append(_stage.name)


def _check_order() -> None:
    seen: set[str] = set()
    for stage in STAGES:
        if not stage.description:  # the help of its CLI command
            raise AssertionError(f"stage '{stage.name}' declares no description")
        unknown = [name for name in stage.reads if name not in seen]
        if unknown:
            raise AssertionError(f"stage '{stage.name}' reads {unknown}, which do not run before it")
        seen.add(stage.name)


_check_order()


def upstream_of(names: list[str]) -> list[str]:
    """Every stage the given stages read, directly or not, in execution order (the stages excluded)."""
    needed: set[str] = set()
    frontier = list(names)
    while frontier:
        for dep in STAGE_BY_NAME[frontier.pop()].reads:
            if dep not in needed:
                needed.add(dep)
                frontier.append(dep)
    return [name for name in STAGE_BY_NAME if name in needed and name not in names]


def owned_elsewhere(name: str) -> set[Path]:
    """Files other stages write inside this stage's folders (data/split.json inside data/)."""
    return {Path(out) for other in STAGES if other.name != name for out in other.outputs}
