"""Benchmark: dejavu on a busy machine. N smoke runs started together, under each thread setting.

A laptop or a shared server is the normal case, so the default thread setting must stay close to the
best one both when a run is alone and when other jobs share the cores. For each concurrency level
(``--concurrency 1,3``: one run alone, three at once) and each setting below, ``--repeats`` rounds
start that many ``dejavu run --config smoke`` processes at the same moment, each in its own fresh run
folder, and time each from start to exit (the install's import of torch included, as a user meets it).
The settings of one round follow each other in rotating order, so a slow spell of the machine is shared
between them:

  default                what `dejavu run` does: threads = the CPUs this process may use (affinity and
                         cgroup quota), idle OpenMP threads sleep at once (dejavu sets OMP_WAIT_POLICY=PASSIVE)
  threads=1              one thread per run
  GOMP_SPINCOUNT=300000  the default thread count with libgomp's own waiting (idle threads spin ~3 ms
                         before they sleep): what dejavu did before
  (--extra)              any other settings: config overrides and environment variables in one string,
                         e.g. --extra "GOMP_SPINCOUNT=10000" "threads=1 GOMP_SPINCOUNT=300000"

(--only LABEL ... keeps only the built-in settings named.)

It prints a Markdown table: per level and setting the median, minimum and maximum seconds of a run
over all runs of all rounds, and the ratio of each median to the best median of that level.

    .venv/bin/python benchmarks/contention.py                      # smoke runs, 1 and 3 at once, 3 rounds
    .venv/bin/python benchmarks/contention.py --config configs/demo.yaml \
        --overrides train.epochs=100 data.images_per_class=250 split.x_per_class=100   # the demo's net, shorter
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dejavu.metrics.outcomes import EXIT_CODES

ROOT = Path(__file__).resolve().parents[1]
LIBGOMP_SPIN = "300000"  # libgomp's own default: ~3 ms of spinning before a thread sleeps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,3", help="comma-separated numbers of runs started together")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per level and setting")
    parser.add_argument("--config", default=str(ROOT / "configs" / "smoke.yaml"), help="the config each run uses")
    parser.add_argument("--overrides", nargs="*", default=[], help="KEY=VALUE overrides of every run (the workload)")
    parser.add_argument("--only", nargs="*", default=None, metavar="LABEL",
                        help="time only these of the built-in settings (default, threads=1, "
                             f"GOMP_SPINCOUNT={LIBGOMP_SPIN}), e.g. --only default threads=1")
    parser.add_argument("--extra", nargs="*", default=[],
                        help="more settings, each one string of config overrides and environment variables, "
                             "e.g. 'threads=1 GOMP_SPINCOUNT=300000'")
    args = parser.parse_args(argv)
    try:
        args.levels = [int(n) for n in args.concurrency.split(",")]
    except ValueError:
        parser.error(f"--concurrency {args.concurrency!r}: expected comma-separated counts, e.g. 1,3")
    if min(args.levels) < 1 or args.repeats < 1:
        parser.error("--concurrency counts and --repeats must be positive")
    known = [label for label, _, _ in settings([])]
    unknown = [label for label in args.only or [] if label not in known]
    if unknown:
        parser.error(f"--only {' '.join(unknown)}: not a built-in setting; choose among {', '.join(known)}")
    return args


def _setting(text: str) -> tuple[str, list[str], dict[str, str]]:
    """``"threads=1 GOMP_SPINCOUNT=300000"``: config overrides, and environment variables (upper-case names)."""
    words = text.split()
    env = dict(w.split("=", 1) for w in words if w.split("=", 1)[0].isupper())
    return text, [w for w in words if not w.split("=", 1)[0].isupper()], env


def settings(extra: list[str], only: list[str] | None = None) -> list[tuple[str, list[str], dict[str, str]]]:
    """(label, overrides, environment) of each setting: the built-in ones (those named in ``only``), then ``extra``."""
    chosen = [("default", [], {}), _setting("threads=1"), _setting(f"GOMP_SPINCOUNT={LIBGOMP_SPIN}")]
    chosen = [setting for setting in chosen if only is None or setting[0] in only]
    return chosen + [_setting(text) for text in extra]


def _environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    return {**env, **extra}


# `dejavu run`'s exit codes of a finished run: a verdict, no verdict, inconclusive (dejavu.metrics.outcomes).
FINISHED = (EXIT_CODES["detected"], EXIT_CODES["no_verdict"], EXIT_CODES["inconclusive"])


def one_round(count: int, config: str, overrides: list[str], extra_env: dict[str, str], work: Path) -> list[float]:
    """Start ``count`` runs at once; each one's wall seconds."""
    command = [sys.executable, "-m", "dejavu", "run", "--config", config]
    started, processes = [], []
    for index in range(count):
        out = Path(tempfile.mkdtemp(prefix=f"run{index}-", dir=work))
        started.append(time.perf_counter())
        processes.append(subprocess.Popen([*command, "--out", str(out / "run"), *overrides], cwd=work,
                                          env=_environment(extra_env), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True))
    # Each run is waited for on its own thread: reading them in turn would time an early finisher by the
    # moment a slower one before it ended.
    with ThreadPoolExecutor(max_workers=count) as pool:
        ended = list(pool.map(lambda process: (process.communicate()[1], time.perf_counter()), processes))
    for process, (err, _) in zip(processes, ended):
        if process.returncode not in FINISHED:
            raise SystemExit(f"a run failed (exit {process.returncode}): {err.strip().splitlines()[-1:]}")
    return [end - begin for begin, (_, end) in zip(started, ended)]


def measure(args: argparse.Namespace) -> dict[tuple[int, str], list[float]]:
    chosen = settings(args.extra, args.only)
    times: dict[tuple[int, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="dejavu-contention-") as folder:
        work = Path(folder)
        for level in args.levels:
            for repeat in range(args.repeats):
                turn = chosen[repeat % len(chosen):] + chosen[:repeat % len(chosen)]
                for label, overrides, env in turn:
                    seconds = one_round(level, args.config, [*args.overrides, *overrides], env, work)
                    times.setdefault((level, label), []).extend(seconds)
                    print(f"  {level} at once, {label}, round {repeat + 1}: "
                          + " ".join(f"{s:.1f}" for s in seconds) + " s", file=sys.stderr, flush=True)
    return times


def table(args: argparse.Namespace, times: dict[tuple[int, str], list[float]]) -> str:
    lines = ["| runs at once | setting | median s per run | min s | max s | runs | ratio to best |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for level in args.levels:
        medians = {label: statistics.median(values) for (lv, label), values in times.items() if lv == level}
        best = min(medians.values())
        for label, median in medians.items():
            values = times[(level, label)]
            lines.append(f"| {level} | {label} | {median:.1f} | {min(values):.1f} | {max(values):.1f} | "
                         f"{len(values)} | {median / best:.2f} |")
    return "\n".join(lines)


def machine() -> str:
    import torch

    from dejavu.cpus import usable_cpus

    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{platform.machine()}, {os.cpu_count()} logical cores, {usable_cpus()} usable by this process; "
            f"Python {platform.python_version()}, torch {torch.__version__}; load average before: {load}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    header = machine()
    start = time.perf_counter()
    times = measure(args)
    workload = " ".join([f"--config {Path(args.config).stem}", *args.overrides])
    print(f"### `dejavu run {workload}`, started N at once ({args.repeats} rounds per setting)\n")
    print(f"Machine: {header}; {time.perf_counter() - start:.0f} s in all.\n")
    print(table(args, times))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
