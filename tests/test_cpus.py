"""Thread defaults follow the CPUs this process may use (affinity and cgroup quota), and idle OpenMP
threads sleep instead of spinning."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dejavu.cpus import (affinity_cpus, cgroup_cpu_limit, openmp_waiting, other_dejavu_processes, runnable_others,
                         usable_cpus)

ROOT = Path(__file__).resolve().parents[1]


def _tree(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    root.mkdir(exist_ok=True)
    self_cgroup = tmp_path / "self_cgroup"
    self_cgroup.write_text(membership)
    return root, self_cgroup


def test_a_v2_quota_on_the_group_or_a_parent_binds_and_rounds_down(tmp_path):
    root, me = _tree(tmp_path, "0::/jobs/job7\n", {"jobs/job7/cpu.max": "max 100000\n",
                                                    "jobs/cpu.max": "150000 100000\n"})
    assert cgroup_cpu_limit(root, me) == pytest.approx(1.5)
    assert usable_cpus(root, me) == min(affinity_cpus(), 1)


def test_the_tightest_of_several_v2_limits_counts(tmp_path):
    root, me = _tree(tmp_path, "0::/a/b\n", {"a/b/cpu.max": "300000 100000", "a/cpu.max": "800000 200000",
                                              "cpu.max": "max 100000"})
    assert cgroup_cpu_limit(root, me) == pytest.approx(3.0)


def test_no_limit_leaves_the_affinity_count(tmp_path):
    root, me = _tree(tmp_path, "0::/\n", {"cpu.max": "max 100000"})
    assert cgroup_cpu_limit(root, me) is None
    assert usable_cpus(root, me) == affinity_cpus() == len(os.sched_getaffinity(0))


def test_a_quota_under_one_cpu_still_leaves_one_thread(tmp_path):
    root, me = _tree(tmp_path, "0::/\n", {"cpu.max": "20000 100000"})
    assert cgroup_cpu_limit(root, me) == pytest.approx(0.2)
    assert usable_cpus(root, me) == 1


def test_a_v1_cfs_quota_counts_and_minus_one_means_none(tmp_path):
    root, me = _tree(tmp_path, "12:memory:/x\n4:cpu,cpuacct:/docker/abc\n",
                     {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
                      "cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"})
    assert cgroup_cpu_limit(root, me) == pytest.approx(2.5)
    root2, me2 = _tree(tmp_path / "none", "4:cpu,cpuacct:/\n",
                       {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"})
    assert cgroup_cpu_limit(root2, me2) is None


def test_unreadable_or_garbled_cgroup_files_mean_no_limit(tmp_path):
    root, me = _tree(tmp_path, "0::/g\n", {"g/cpu.max": "lots of cpus", "cpu.max": ""})
    assert cgroup_cpu_limit(root, me) is None
    assert cgroup_cpu_limit(root, tmp_path / "missing") is None


def _python(code: str, env: dict[str, str] | None = None) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            cwd=ROOT, env={**base, **(env or {})}, check=True)
    return result.stdout.strip()


def test_the_default_thread_count_follows_the_affinity_mask_not_the_machine():
    """A process pinned to one CPU (as taskset, SLURM or a container pins it) gets one thread, though the
    machine has more; an explicit count above it is refused."""
    out = _python("""
        import os
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        import torch
        from dejavu.config import Config
        from dejavu.errors import ConfigError
        from dejavu.stages import set_threads
        set_threads(Config())
        print(torch.get_num_threads(), os.cpu_count())
        try:
            set_threads(Config(threads=2))
        except ConfigError as error:
            print(error)
    """)
    first, message = out.splitlines()
    assert first.split()[0] == "1"
    assert "this process may use 1 CPU;" in message


def test_threads_spin_briefly_on_free_cpus_and_sleep_at_once_when_others_compete():
    assert openmp_waiting(0, 2, 2) == {"GOMP_SPINCOUNT": "10000"}
    assert openmp_waiting(1, 2, 2) == {"OMP_WAIT_POLICY": "PASSIVE"}  # one other task: a core is taken
    assert openmp_waiting(2, 2, 4) == {"GOMP_SPINCOUNT": "10000"}  # two others on a 4-core machine: room
    assert openmp_waiting(3, 2, 4) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert openmp_waiting(None, 2, 2) == {"OMP_WAIT_POLICY": "PASSIVE"}  # cannot tell: the safe choice
    assert openmp_waiting(0, 2, 2, runs=1) == {"OMP_WAIT_POLICY": "PASSIVE"}  # another dejavu started with it
    assert openmp_waiting(0, 2, 8, runs=None) == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_other_dejavu_processes_are_counted_by_their_command(tmp_path):
    commands = {"101": b"/venv/bin/dejavu\0run\0--out\0r\0", "102": b"/usr/bin/python3\0-m\0dejavu\0sweep\0",
                "103": b"python\0-m\0pytest\0tests/test_dejavu.py\0", "104": b"/usr/bin/vim\0dejavu\0", "106": b"/venv/bin/python3\0/venv/bin/dejavu\0run\0",
                str(os.getpid()): b"/venv/bin/dejavu\0run\0", "self": b"", "105": b""}
    for pid, argv in commands.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(argv)
    # 101 and 106 (the console script, exec'd or through its shebang) and 102 (python -m dejavu); not pytest, not an editor on a file named
    # dejavu (an argument, not the program), not this process, not a kernel thread's empty command line.
    assert other_dejavu_processes(tmp_path) == 3
    assert other_dejavu_processes(tmp_path / "missing") is None


def test_runnable_others_reads_procs_running_and_takes_the_fewest_look(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nprocs_running 4\nprocs_blocked 0\n")
    assert runnable_others(looks=2, gap_s=0, stat=stat) == 3
    stat.write_text("cpu  1 2 3\n")
    assert runnable_others(looks=1, stat=stat) is None
    assert runnable_others(stat=tmp_path / "missing") is None
    assert runnable_others() >= 0  # this machine's /proc/stat


def test_beside_competing_work_dejavu_makes_idle_threads_sleep_unless_the_user_chose():
    """Real competitors: as many busy processes as the machine has CPUs. dejavu then sets the wait
    policy to passive before torch loads libgomp, and keeps one the user set."""
    code = """
        import os, dejavu, torch
        print(os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT"))
    """
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        assert _python(code) == "PASSIVE None"
        assert _python(code, {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE None"
        assert _python(code, {"GOMP_SPINCOUNT": "300000"}) == "None 300000"
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def test_the_run_records_what_threads_0_meant(tmp_path):
    from dejavu.config import load_config
    from dejavu.runs import Run, read_json

    run = Run(tmp_path / "r", load_config(ROOT / "configs" / "smoke.yaml"))
    run.claim()
    meta = read_json(run.root / "run.json")
    assert meta["usable_cpus"] == usable_cpus() and meta["processor_count"] == os.cpu_count()
    assert set(meta["openmp_waiting"]) <= {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} and meta["openmp_waiting"]
