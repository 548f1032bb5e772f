"""The files a finished stage wrote, and their signature: what lets a run folder notice that one was
changed or removed after its stage finished.

A stage's marker records the size and modification time of every file among its declared ``outputs``
(a folder: everything under it but other stages' outputs). A stage whose files no longer match is not
done: the next run computes it again (and, through the new token, everything that read it), instead
of trusting an artifact that someone edited, truncated or replaced since.
"""

from __future__ import annotations

from pathlib import Path

from dejavu.runs import Run
from dejavu.stages.declaration import Stage
from dejavu.stages.registry import owned_elsewhere


def in_progress(path: Path) -> bool:
    """Files of work in progress, never part of a finished stage: temp files of an atomic write
    (".<name>.<pid>-<random>.tmp"), a resume state, and the data stage's partial pixel cache (which it
    reopens for writing in place: linked, a write would reach the donor's file)."""
    return (path.name.startswith(".") and path.name.endswith(".tmp")) or path.name == "resume.pt" \
        or path.name.endswith(".resume.pt") or ".partial." in path.name


def output_files(root: Path, stage: Stage) -> list[Path]:
    """The files of ``stage`` under ``root``, relative to it."""
    # Files another stage owns inside this stage's folder (data/split.json, data/crops.csv) are not its.
    # A folder owned elsewhere (data/export, inside data/) excludes everything under it; a folder above
    # this stage's own outputs (data/, above data/split.json) excludes nothing.
    skip = owned_elsewhere(stage.name)
    found = []
    for name in stage.outputs:
        path = root / name
        if path.is_dir():
            nested = {s for s in skip if Path(name) in s.parents}
            found += [f for f in (p.relative_to(root) for p in sorted(path.rglob("*")) if p.is_file())
                      if not (f in nested or nested.intersection(f.parents))]
        elif path.is_file():
            found.append(Path(name))
    return [p for p in found if not in_progress(p)]


def signature(root: Path, stage: Stage) -> dict[str, list[int]]:
    """``{relative path: [size, mtime_ns]}`` of the stage's files: cheap to take and to check (a stat
    each), and changed by any rewrite, truncation or replacement (hard links share it)."""
    out = {}
    for relative in output_files(root, stage):
        stat = (root / relative).stat()
        out[relative.as_posix()] = [stat.st_size, stat.st_mtime_ns]
    return out


def changed_files(run: Run, stage: Stage) -> list[str]:
    """The files the stage's marker recorded that are missing or differ now (empty for markers written
    before signatures existed, which are trusted as they were)."""
    recorded = run.marker_payload(stage.name).get("files")
    if not isinstance(recorded, dict):
        return []
    changed = []
    for relative, expected in recorded.items():
        path = run.root / relative
        try:
            stat = path.stat()
        except OSError:
            changed.append(relative)
            continue
        if [stat.st_size, stat.st_mtime_ns] != expected:
            changed.append(relative)
    return changed
