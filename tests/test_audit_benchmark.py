"""benchmarks/audit_embedding.py at tiny size: the audit path and the bare forward really embed the same."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_audit_benchmark_runs_and_the_two_paths_agree():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "audit_embedding.py"), "--arch", "resnet18", "--size", "32",
         "--images", "4", "--batch", "2", "--rounds", "1"],
        capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| `dejavu audit`" in result.stdout and "embeddings agree: True" in result.stdout
