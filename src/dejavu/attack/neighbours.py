"""Exact k-nearest-neighbour search in L2, faiss-shaped: ``knn(queries, database, k) -> (dist, idx)``.

Two backends with one contract: faiss ``IndexFlatL2`` (the paper's; fast on CPU) and chunked torch
matmul + top-k (uses a GPU when one is present). Both are exact; tests check them against numpy.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch


def knn_faiss(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 distances (Q, k) ascending and database rows (Q, k), via faiss IndexFlatL2."""
    database = np.ascontiguousarray(database, dtype=np.float32)
    index = faiss.IndexFlatL2(database.shape[1])
    index.add(database)
    distances, indices = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return distances, indices.astype(np.int64)


def knn_torch(
    queries: np.ndarray, database: np.ndarray, k: int, chunk: int = 4096, device: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Squared L2 distances and rows by matmul + top-k in query chunks (GPU when available).

    ||q - x||^2 = ||q||^2 - 2 q.x + ||x||^2; computed in float32 (float64 on CPU would be exact
    but slower; faiss uses the same expansion).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    base = torch.from_numpy(np.ascontiguousarray(database, dtype=np.float32)).to(device)
    base_norms = (base * base).sum(1)
    all_distances, all_indices = [], []
    for start in range(0, len(queries), chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[start : start + chunk], dtype=np.float32)).to(device)
        distances = (q * q).sum(1, keepdim=True) - 2.0 * q @ base.T + base_norms
        values, rows = torch.topk(distances, k, dim=1, largest=False, sorted=True)
        all_distances.append(values.clamp_min_(0).cpu().numpy())
        all_indices.append(rows.cpu().numpy())
    if not all_distances:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(all_distances), np.concatenate(all_indices).astype(np.int64)


def knn(queries: np.ndarray, database: np.ndarray, k: int, backend: str = "faiss") -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN of float (Q, D) queries in a float (N, D) database.

    Example:
        >>> dist, idx = knn(np.eye(3, dtype="f4"), np.eye(3, dtype="f4"), k=1)
        >>> idx.ravel().tolist()
        [0, 1, 2]
    """
    if k > len(database):
        raise ValueError(f"k = {k} exceeds the database size {len(database)}")
    if len(queries) == 0:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    if backend == "faiss":
        return knn_faiss(queries, database, k)
    if backend == "torch":
        return knn_torch(queries, database, k)
    raise ValueError(f"unknown kNN backend {backend!r}; valid: faiss, torch")
