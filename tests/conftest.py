import os

import pytest
import torch

# Tests are small; two threads is what CI has, and fixed threads keep results reproducible.
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY = [
    "data.images_per_class=40", "data.image_size=32", "data.input_size=16",
    "split.a_per_class=8", "split.b_per_class=8", "split.x_per_class=16", "split.t_per_class=8",
    "crop.min_side_px=4", "attack.k=5", "train.epochs=2", "train.batch_size=16",
    "train.projector=32-32", "train.widths=[4,8]", "metrics.bootstrap=50", "train.warmup_epochs=0",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    """Config overrides for a run that takes seconds (every stage, tiny sizes)."""
    return list(TINY)


def pytest_sessionfinish(session, exitstatus):
    """No test may be silently skipped: a skip fails the run (CI must see every test execute)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and exitstatus == 0:
        reporter.write_line(f"FAILED: {len(skipped)} test(s) were skipped; every test must run", red=True)
        session.exitstatus = 1
