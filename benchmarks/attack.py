"""Benchmark of the attack's exact kNN search and of the per-example metrics, side by side.

Times, in one run on the same random data, the median of ``--repeats`` runs of:

  (a) ``dejavu.attack.neighbours.knn(..., backend="faiss")`` -- the pipeline's default path;
  (b) raw faiss ``IndexFlatL2`` add + search, called directly (the floor for (a));
  (c) ``dejavu.attack.neighbours.knn_torch`` -- torch matmul + top-k in query chunks;
  (d) a naive numpy reference (distance matrix in chunks + argpartition), only with ``--with-numpy``;

and the metrics that ``dejavu.metrics`` computes for ``--metrics-examples`` attacked examples with
k neighbours each: vote (one bincount) + top-5 + confidence for a target and a reference model,
accuracy curves, the four-way partition, exact McNemar and a 1000-resample bootstrap interval.

(a), (b), (c) must agree (same neighbour set for >= 99.9 % of rows, distances allclose), otherwise
the script exits 1. It prints Markdown for docs/benchmarks.md.

Full size (the defaults) -- several minutes on a laptop CPU:
    PYTHONPATH=src python benchmarks/attack.py
Smoke test:
    PYTHONPATH=src python benchmarks/attack.py --queries 50 --public 300 --dim 8 --k 5 --repeats 1 --metrics-examples 500
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

SEED = 0
N_CLASSES = 100
BOOTSTRAP_RESAMPLES = 1000
MIN_SET_AGREEMENT = 0.999


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=20000, help="attacked crops (query rows)")
    parser.add_argument("--public", type=int, default=50000, help="public set X (database rows)")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension")
    parser.add_argument("--k", type=int, default=100, help="neighbours per query")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (median reported)")
    parser.add_argument("--metrics-examples", type=int, default=150000, help="examples for the metrics timing")
    parser.add_argument("--threads", type=int, default=0, help="torch and faiss threads; 0 = library default")
    parser.add_argument("--with-numpy", action="store_true", help="also time the naive numpy reference (slow)")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    if args.k > args.public:
        parser.error(f"--k {args.k} exceeds --public {args.public}")
    if min(args.queries, args.public, args.dim, args.k, args.repeats, args.metrics_examples) < 1:
        parser.error("sizes and --repeats must be positive")
    return args


# ---------------------------------------------------------------------------------------------
# The methods


def raw_faiss(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatL2(database.shape[1])
    index.add(database)
    return index.search(queries, k)


def numpy_knn(queries: np.ndarray, database: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Naive exact kNN: a (chunk, N) squared-distance matrix, argpartition, then sort the k."""
    base_norms = np.einsum("ij,ij->i", database, database)
    out_d = np.empty((len(queries), k), np.float32)
    out_i = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        d = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * (q @ database.T) + base_norms
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < d.shape[1] else np.tile(np.arange(d.shape[1]), (len(q), 1))
        pd = np.take_along_axis(d, part, axis=1)
        order = np.argsort(pd, axis=1, kind="stable")
        out_d[start : start + chunk] = np.maximum(np.take_along_axis(pd, order, axis=1), 0)
        out_i[start : start + chunk] = np.take_along_axis(part, order, axis=1)
    return out_d, out_i


def metrics_work(target_labels: np.ndarray, reference_labels: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """What ``dejavu.metrics`` does per attacked example (cf. tables.direction_table / pooled_summary)."""
    from dejavu.attack.vote import confidence, top_predictions, vote
    from dejavu.metrics.partition import partition_shares
    from dejavu.metrics.population import accuracy_curve
    from dejavu.metrics.stats import bootstrap_gap_ci, mcnemar_exact

    correct, conf = [], []
    for neighbour_labels in (target_labels, reference_labels):
        counts = vote(neighbour_labels, N_CLASSES)
        top5 = top_predictions(counts, 5)
        conf.append(confidence(counts))
        correct.append(top5[:, 0] == labels)
    t_ok, r_ok = correct
    curves = [accuracy_curve(ok, c) for ok, c in zip(correct, conf)]
    shares = partition_shares(t_ok, r_ok)
    test = mcnemar_exact(t_ok, r_ok)
    half = len(labels) // 2  # two directions, as pooled_summary bootstraps them
    directions = [(t_ok[:half], r_ok[:half]), (t_ok[half:], r_ok[half:])]
    ci = bootstrap_gap_ci([d for d in directions if len(d[0])], n_resamples=BOOTSTRAP_RESAMPLES, seed=seed)
    return {"curves": curves, "shares": shares, "mcnemar": test, "ci": ci}


# ---------------------------------------------------------------------------------------------
# Timing and checks


def time_runs(fn: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def agreement(reference: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray]) -> tuple[float, bool, float]:
    """(share of rows with the same neighbour set, distances allclose, max |distance difference|)."""
    ref_d, ref_i = (np.asarray(a) for a in reference)
    oth_d, oth_i = (np.asarray(a) for a in other)
    same_rows = np.all(np.sort(ref_i, axis=1) == np.sort(oth_i, axis=1), axis=1)
    # Sorted distance lists are compared: a swapped near-tie at the k-th place changes the set
    # but not the k smallest distances (up to float32 rounding of the ||q||^2 - 2q.x + ||x||^2 expansion).
    scale = float(np.max(np.abs(ref_d))) if ref_d.size else 1.0
    close = bool(np.allclose(oth_d, ref_d, rtol=1e-4, atol=1e-5 * max(scale, 1.0)))
    max_diff = float(np.max(np.abs(oth_d.astype(np.float64) - ref_d))) if ref_d.size else 0.0
    return float(same_rows.mean()) if len(same_rows) else 1.0, close, max_diff


def machine_info(threads: int, torch_device: str) -> list[tuple[str, str]]:
    import faiss
    import scipy
    import torch

    return [
        ("CPU", f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)"),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
        ("numpy", np.__version__),
        ("scipy", scipy.__version__),
        ("torch", torch.__version__),
        ("faiss", getattr(faiss, "__version__", "?")),
        ("threads", f"torch {torch.get_num_threads()}, faiss {faiss.omp_get_max_threads()}"
                    + (" (library default)" if threads == 0 else f" (--threads {threads})")),
        ("knn_torch device", torch_device),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import faiss
    import torch

    from dejavu.attack.neighbours import knn, knn_torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    torch_device = "cuda" if torch.cuda.is_available() else "cpu"

    rng = np.random.default_rng(args.seed)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    database = rng.standard_normal((args.public, args.dim), dtype=np.float32)
    k = args.k

    methods: list[tuple[str, Callable[[], tuple[np.ndarray, np.ndarray]]]] = [
        ('(a) `knn(backend="faiss")`', lambda: knn(queries, database, k, backend="faiss")),
        ("(b) raw faiss `IndexFlatL2`", lambda: raw_faiss(queries, database, k)),
        (f"(c) `knn_torch` ({torch_device})", lambda: knn_torch(queries, database, k)),
    ]
    if args.with_numpy:
        methods.append(("(d) numpy reference", lambda: numpy_knn(queries, database, k)))

    # Warm-up on a slice (imports, thread pools, CUDA context) so the first timed run is not penalised.
    small_q, small_db = queries[: min(64, len(queries))], database[: max(k, min(1024, len(database)))]
    knn(small_q, small_db, k, backend="faiss")
    raw_faiss(small_q, small_db, k)
    knn_torch(small_q, small_db, k)

    timings: dict[str, list[float]] = {}
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, fn in methods:
        print(f"timing {name} ...", file=sys.stderr, flush=True)
        timings[name], results[name] = time_runs(fn, args.repeats)

    # Metrics: random neighbour labels for a target and a reference model and random true labels.
    n = args.metrics_examples
    m_rng = np.random.default_rng(args.seed + 1)
    labels = m_rng.integers(0, N_CLASSES, n)
    # The target agrees with the true label a bit more often, so there is a gap to measure.
    target_labels = np.where(m_rng.random((n, k)) < 0.15, labels[:, None], m_rng.integers(0, N_CLASSES, (n, k)))
    reference_labels = np.where(m_rng.random((n, k)) < 0.10, labels[:, None], m_rng.integers(0, N_CLASSES, (n, k)))
    metrics_work(target_labels[:8], reference_labels[:8], labels[:8], args.seed)  # warm-up (imports)
    print("timing metrics ...", file=sys.stderr, flush=True)
    metric_name = f"metrics ({n} examples x k = {k})"
    metric_times, metric_result = time_runs(lambda: metrics_work(target_labels, reference_labels, labels, args.seed),
                                            args.repeats)

    # Agreement of (a), (b), (c) (and (d)) with (b), raw faiss.
    names = [name for name, _ in methods]
    base = names[1]
    checks = []
    ok = True
    for name in names:
        if name == base:
            continue
        share, close, max_diff = agreement(results[base], results[name])
        good = share >= MIN_SET_AGREEMENT and close
        ok &= good or name.startswith("(d)")  # (d) is informational
        checks.append((name, share, close, max_diff, good))

    # ---- Markdown
    faiss_median = statistics.median(timings[base])  # ratio to (b), raw faiss
    print(f"### Attack kNN + metrics: {args.queries} queries x {args.public} public, dim {args.dim}, k = {k}\n")
    print(f"Median and minimum of {args.repeats} run(s); time.perf_counter; random float32 N(0, 1) data, seed {args.seed}; "
          "ratio = median / median of (b) raw faiss.\n")
    print("| method | median s | min s | queries/s | ratio to faiss |")
    print("|---|---:|---:|---:|---:|")
    for name in names + [metric_name]:
        times = timings[name] if name in timings else metric_times
        med = statistics.median(times)
        count = args.queries if name in timings else n
        rate = count / med if med > 0 else float("inf")
        unit = "" if name in timings else " (examples/s)"
        print(f"| {name} | {med:.4f} | {min(times):.4f} | {rate:,.0f}{unit} | {med / faiss_median:.2f} |")
    print()
    print("Agreement with (b) raw faiss:\n")
    print("| method | rows with identical neighbour set | distances allclose | max abs diff | ok |")
    print("|---|---:|:---:|---:|:---:|")
    for name, share, close, max_diff, good in checks:
        print(f"| {name} | {100 * share:.3f} % | {'yes' if close else 'no'} | {max_diff:.2e} | {'yes' if good else 'NO'} |")
    print()
    test, ci = metric_result["mcnemar"], metric_result["ci"]
    print(f"Metrics sanity: McNemar b = {test.b}, c = {test.c}, p = {test.p_value:.3g}; "
          f"bootstrap 95 % CI of the gap [{ci[0]:+.4f}, {ci[1]:+.4f}] ({BOOTSTRAP_RESAMPLES} resamples).\n")
    print("| machine | |")
    print("|---|---|")
    for key, value in machine_info(args.threads, torch_device):
        print(f"| {key} | {value} |")
    if not ok:
        print(f"\nFAILED: a method disagrees with raw faiss (needs >= {100 * MIN_SET_AGREEMENT:.1f} % identical "
              "neighbour sets and allclose distances)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
