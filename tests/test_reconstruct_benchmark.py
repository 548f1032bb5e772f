"""benchmarks/reconstruct.py at tiny size: it times all five cases and prints their table."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_tabulates_training_and_sampling_against_the_bare_unet():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "reconstruct.py"), "--size", "8", "--channels", "8", "8",
         "--condition", "6", "--batch", "4", "--iterations", "2", "--steps", "2", "--sample-batch", "4",
         "--repeats", "1"], capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| (")]
    assert [row[0].strip()[:3] for row in rows] == ["(a)", "(b)", "(c)", "(d)", "(e)"]
    assert all(float(row[1].replace(",", "")) > 0 for row in rows)
    assert [row[3].strip() for row in rows][:3:2] == ["1.00", "1.00"], "each ratio is to its bare case"
