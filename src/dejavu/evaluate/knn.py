"""kNN classification accuracy of an encoder's embeddings: the conventional SSL metric.

It reuses the attack's exact neighbour search and vote, so "kNN accuracy on full images" and
"label inference from crops" differ only in their queries.
"""

from __future__ import annotations

import numpy as np

from dejavu.attack.neighbours import knn
from dejavu.attack.vote import top_predictions, vote


def knn_accuracy(
    database: np.ndarray, database_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray,
    k: int = 20, backend: str = "faiss",
) -> float:
    """Top-1 accuracy of the majority label among each query's k nearest database embeddings (L2).

    Example:
        >>> db = np.array([[0.0], [0.1], [5.0], [5.1]], "f4")
        >>> knn_accuracy(db, np.array([0, 0, 1, 1]), np.array([[0.05], [4.9]], "f4"), np.array([0, 1]), k=2)
        1.0
    """
    if len(queries) == 0:
        raise ValueError("kNN accuracy needs at least one query")
    k = min(k, len(database))
    _, rows = knn(np.asarray(queries, np.float32), np.asarray(database, np.float32), k, backend)
    n_classes = int(max(database_labels.max(), query_labels.max())) + 1
    predicted = top_predictions(vote(database_labels[rows], n_classes), top=1)[:, 0]
    return float(np.mean(predicted == query_labels))
