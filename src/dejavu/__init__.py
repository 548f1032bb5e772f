"""dejavu: audit self-supervised vision models for deja vu memorization.

Re-implements the two-model test of Meehan et al., "Do SSL Models Have Deja Vu?
A Case of Unintended Memorization in Self-supervised Learning" (NeurIPS 2023).
"""

import importlib
import os

from dejavu.cpus import openmp_waiting, other_dejavu_processes, runnable_others, usable_cpus

# How idle OpenMP threads wait is read once, when torch (and faiss) load libgomp, so it is chosen here,
# before they are imported: a short spin when this process's threads find their CPUs free, sleeping at
# once when other work already competes for them or another dejavu runs (dejavu.cpus; measured in
# benchmarks/contention.py).
# A choice of the user's (OMP_WAIT_POLICY or GOMP_SPINCOUNT) is kept.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ.update(openmp_waiting(runnable_others(), usable_cpus(), os.cpu_count() or 1, other_dejavu_processes()))

__version__ = "0.1.0"

# The Python API (dejavu.run, dejavu.audit, dejavu.Result: see dejavu.api), loaded on first use (PEP 562)
# so that `import dejavu.config` and the other lower layers do not import the whole package and torch.
_API = ("Result", "audit", "result_of", "run")


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module("dejavu.api"), name)
    raise AttributeError(f"module 'dejavu' has no attribute {name!r}")
