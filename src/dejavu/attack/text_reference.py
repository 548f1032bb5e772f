"""A text-only reference for the vision-language test: captions retrieve public images by their captions alone.

The follow-up's one-model variant replaces the reference CLIP by a sentence embedder that never saw an image.
Here the embedder is TF-IDF over a caption's lower-cased words and word pairs, fitted on the public set's
captions only: what a caption reveals through the public data's text, with no image and no training pair. No
model to download or train; written with numpy and scipy's sparse matrices (scikit-learn's TfidfVectorizer does
the same, but is not otherwise needed here).
"""

from __future__ import annotations

import re

import numpy as np
from scipy import sparse

WORD = re.compile(r"\w+")


def _terms(caption: str) -> list[str]:
    words = WORD.findall(caption.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


class TfidfCaptions:
    """TF-IDF vectors (smoothed idf, L2-normal rows) of captions over the vocabulary of ``fitted`` captions.

    Example:
        >>> index = TfidfCaptions(["a red disc", "a blue square", "a red square"])
        >>> index.nearest(["red disc"], k=1).tolist()
        [[0]]
    """

    def __init__(self, fitted):
        documents = [_terms(str(caption)) for caption in fitted]
        vocabulary = sorted({term for terms in documents for term in terms})
        self.index = {term: i for i, term in enumerate(vocabulary)}
        counts = np.zeros(len(vocabulary))
        for terms in documents:
            for term in set(terms):
                counts[self.index[term]] += 1
        self.idf = np.log((1 + len(documents)) / (1 + counts)) + 1
        self.fitted = self.vectors(fitted)

    def vectors(self, captions) -> sparse.csr_matrix:
        rows, cols, values = [], [], []
        for row, caption in enumerate(captions):
            known = [self.index[t] for t in _terms(str(caption)) if t in self.index]
            ids, tf = np.unique(np.array(known, dtype=np.int64), return_counts=True)
            weights = tf * self.idf[ids]
            norm = np.linalg.norm(weights)
            rows += [row] * len(ids)
            cols += ids.tolist()
            values += (weights / norm if norm else weights).tolist()
        return sparse.csr_matrix((values, (rows, cols)), shape=(len(captions), len(self.index)))

    def nearest(self, captions, k: int, chunk: int = 512) -> np.ndarray:
        """int64 (N, k): the rows of the fitted captions most similar (cosine) to each caption, best first; ties
        broken by row."""
        queries = self.vectors(captions)
        out = np.zeros((len(captions), k), dtype=np.int64)
        for start in range(0, len(captions), chunk):
            similarity = (queries[start:start + chunk] @ self.fitted.T).toarray()
            out[start:start + chunk] = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
        return out
