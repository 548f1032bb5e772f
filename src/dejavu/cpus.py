"""How many CPUs this process may use: its affinity mask and its control group's CPU quota.

``os.cpu_count()`` is the machine's count; a container, a ``taskset``, a SLURM allocation or a
Kubernetes limit gives the process fewer, and as many threads as the machine has cores then only take
turns on the ones it may use (each OpenMP barrier waiting for a thread that is not running).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def affinity_cpus() -> int:
    """The CPUs the scheduler may run this process on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _v2_quota(folder: Path) -> float | None:
    """``cpu.max`` holds ``"<quota> <period>"`` or ``"max <period>"`` (no limit)."""
    text = _read(folder / "cpu.max")
    if not text:
        return None
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(folder: Path) -> float | None:
    """``cpu.cfs_quota_us`` is -1 when there is no limit."""
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _ancestors(root: Path, relative: str) -> list[Path]:
    """The group's folder and each parent up to the mount: a limit set on a parent binds its children.
    Inside a container the group's own path is often not visible under the mount, only the mount itself."""
    parts = [p for p in relative.strip("/").split("/") if p]
    return [root.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> float | None:
    """The tightest CPU quota (in CPUs, e.g. 1.5) on this process's control group and its parents, under
    cgroup v2 or v1; None when there is none or it cannot be read."""
    membership = _read(self_cgroup)
    if membership is None:
        return None
    limits: list[float] = []
    for line in membership.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, relative = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # the unified (v2) hierarchy
            folders, quota = _ancestors(root, relative), _v2_quota
        elif "cpu" in controllers.split(","):
            mount = next((root / name for name in (controllers, "cpu", "cpu,cpuacct") if (root / name).is_dir()), None)
            if mount is None:
                continue
            folders, quota = _ancestors(mount, relative), _v1_quota
        else:
            continue
        limits += [value for value in (quota(folder) for folder in folders) if value is not None]
    return min(limits) if limits else None


def usable_cpus(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int:
    """The CPUs this process may use: its affinity mask, capped by its control group's CPU quota.

    A fractional quota rounds down (at least 1): a second thread on half a CPU's quota is throttled
    in the middle of every parallel region, and the others wait for it at the barrier."""
    count = affinity_cpus()
    limit = cgroup_cpu_limit(root, self_cgroup)
    if limit is not None:
        count = min(count, max(1, math.floor(limit + 1e-9)))
    return count


# libgomp's idle threads spin GOMP_SPINCOUNT times (300,000 by default, about 3 ms) before they sleep.
# On a machine of its own a run is fastest spinning (sleeping costs a futex wake per parallel region:
# 1.2-1.3x on the demo's small net); beside other work the spinning threads burn the cores the others'
# threads wait for (three runs started together: 3.6x with libgomp's default). A short spin keeps most of
# the first, and sleeping at once is safe when others already compete (benchmarks/contention.py).
SHORT_SPIN = {"GOMP_SPINCOUNT": "10000"}
SLEEP_AT_ONCE = {"OMP_WAIT_POLICY": "PASSIVE"}


def runnable_others(looks: int = 3, gap_s: float = 0.02, stat: Path = Path("/proc/stat")) -> int | None:
    """Tasks ready to run on this machine besides this one: the fewest of a few looks at ``procs_running``
    (a shell command that happens to run at one instant is not a competitor); None off Linux."""
    counts = []
    for look in range(looks):
        text = _read(stat)
        if text is None:
            return None
        line = next((ln for ln in text.splitlines() if ln.startswith("procs_running ")), None)
        if line is None:
            return None
        counts.append(max(0, int(line.split()[1]) - 1))
        if look + 1 < looks:
            time.sleep(gap_s)
    return min(counts)


def other_dejavu_processes(proc: Path = Path("/proc")) -> int | None:
    """Other processes running the ``dejavu`` command (or ``python -m dejavu``) on this machine; None off
    Linux. Runs started together cannot see each other as ready to run: each is reading its files or
    looking at the others at that moment, so they are counted by name."""
    if not proc.is_dir():
        return None
    mine, count = os.getpid(), 0
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == mine:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        names = [Path(arg.decode(errors="replace")).name for arg in argv[:2]]
        # The console script runs as `python .../bin/dejavu …` (its shebang), or is exec'd by name.
        script = names[:1] == ["dejavu"] or (names[0].startswith("python") and names[1:2] == ["dejavu"])
        if script or any(a == b"-m" and b == b"dejavu" for a, b in itertools.pairwise(argv)):
            count += 1
    return count


def openmp_waiting(others: int | None, usable: int, machine: int, runs: int | None = 0) -> dict[str, str]:
    """How idle OpenMP threads should wait, given ``others`` runnable tasks besides this process on a
    ``machine`` of that many CPUs, of which this process may use ``usable``, and ``runs`` other dejavu
    processes: spin briefly when its threads find their CPUs free, sleep at once when they would share
    them (or when it cannot tell)."""
    if others is None or runs is None or runs > 0 or others + usable > machine:
        return dict(SLEEP_AT_ONCE)
    return dict(SHORT_SPIN)
