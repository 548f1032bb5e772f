"""Adopting finished stages from another run folder (how a sweep trains a shared model once).

A stage of run R can be taken from run D when D finished it with the fingerprint R would compute for
it. Fingerprints chain through the tokens of the stages read, so stages are adopted in order: after
R adopts D's ``data`` marker (and its token), R's ``split`` fingerprint equals D's exactly when the two
configs' split sections agree. Two points of a sweep over ``attack.layer`` thus share data, split,
crops and both trainings, and recompute from ``embed`` on; points over ``split.a_per_class`` share
only the data.

Artifacts are hard links (copies across file systems): finished artifacts are written by atomic rename,
never in place, so a later re-run in either folder replaces its own link and leaves the other folder's
file intact. Work in progress (resume states, the partial pixel cache) is never linked.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

from dejavu.runs import Run, atomic_path, read_json, write_json
from dejavu.stages.declaration import fingerprint
from dejavu.stages.outputs import changed_files, output_files
from dejavu.stages.registry import STAGES
from dejavu.stages.runner import stage_done

# What a run folder may take from another: each stage's declared outputs (relative to the run folder;
# a folder stands for everything under it but other stages' outputs). The report is not adoptable.
ADOPTABLE = tuple(stage for stage in STAGES if stage.adoptable)


def _link(source: Path, target: Path) -> None:
    """Hard-link ``source`` at ``target`` (a copy across file systems), replacing ``target`` atomically."""
    with atomic_path(target, set_mode=False) as tmp:
        tmp.unlink()  # the name is free again for the link
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or links not allowed there
            shutil.copy2(source, tmp)


def adopt_stages(run: Run, donors: Iterable[Run], log: Callable[[str], None] = print) -> list[str]:
    """Take every stage ``run`` has not done from the first donor that did it with the same fingerprint.

    Returns the stages adopted. A stage no donor has is skipped (those reading it will not match)."""
    donors = [d for d in donors if d.root.resolve() != run.root.resolve()]
    adopted: dict[str, Path] = {}
    for stage in ADOPTABLE:
        wanted_print = fingerprint(stage, run)
        if stage_done(run, stage):
            continue
        # The donor's files must be the ones it wrote: an edited artifact is not passed on.
        donor = next((d for d in donors if d.is_done(stage.name, wanted_print) and not changed_files(d, stage)), None)
        if donor is None:
            continue
        wanted = output_files(donor.root, stage)
        for stale in set(output_files(run.root, stage)) - set(wanted):
            (run.root / stale).unlink()
        for relative in wanted:
            _link(donor.root / relative, run.root / relative)
        marker = read_json(donor.marker(stage.name))
        # Name the folder that computed it, also when the donor had adopted it in turn.
        write_json(run.marker(stage.name), {**marker, "adopted_from": marker.get("adopted_from") or str(donor.root)})
        adopted[stage.name] = donor.root
    for source in dict.fromkeys(adopted.values()):
        log(f"[reuse] {', '.join(s for s, d in adopted.items() if d == source)} taken from {source}")
    return list(adopted)
