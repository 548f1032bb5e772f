"""benchmarks/contention.py at tiny size: it really starts the runs together and tabulates them."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import contention  # noqa: E402


def test_a_setting_splits_into_config_overrides_and_environment():
    assert contention._setting("threads=1 GOMP_SPINCOUNT=300000") == (
        "threads=1 GOMP_SPINCOUNT=300000", ["threads=1"], {"GOMP_SPINCOUNT": "300000"})
    labels = [label for label, _, _ in contention.settings(["OMP_WAIT_POLICY=ACTIVE"])]
    assert labels == ["default", "threads=1", "GOMP_SPINCOUNT=300000", "OMP_WAIT_POLICY=ACTIVE"]
    assert [label for label, _, _ in contention.settings([], ["threads=1"])] == ["threads=1"]


def test_the_benchmark_times_each_run_and_rates_the_settings():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "contention.py"), "--concurrency", "2", "--repeats", "1",
         "--config", str(ROOT / "configs" / "smoke.yaml"), "--only", "default", "threads=1", "--overrides", *TINY],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| 2 |")]
    assert [row[1].strip() for row in rows] == ["default", "threads=1"]  # --only: two of the three built-in
    ratios = [float(row[-1]) for row in rows]
    assert min(ratios) == 1.0 and all(r >= 1.0 for r in ratios)
    assert all(int(row[5]) == 2 for row in rows)  # two runs per setting, each timed on its own
    assert "logical cores" in proc.stdout and "usable by this process" in proc.stdout
