"""The decoder's condition vectors (the paper's RCDM setting, ../shared/PAPER.md "Reconstruction").

Training, on a public image: its own backbone and projector embeddings, concatenated. Attack, on a crop: the
mean backbone embedding of the crop's nearest public neighbours (found with the attacked layer) in the
backbone's place, since the crop's own backbone embedding is what the model sees of the background only,
and the crop's own projector embedding.
"""

from __future__ import annotations

import numpy as np

from dejavu.data.records import index_of_ids
from dejavu.errors import DataError


def training_conditions(backbone: np.ndarray, projector: np.ndarray) -> np.ndarray:
    """float32 (N, Db + Dp): each public image's backbone embedding, then its projector embedding."""
    if backbone.ndim != 2 or projector.ndim != 2 or len(backbone) != len(projector):
        raise DataError(f"training conditions need one backbone and one projector row per image, found "
                        f"{backbone.shape} and {projector.shape}")
    return np.concatenate([backbone, projector], axis=1).astype(np.float32)


def attack_conditions(neighbour_ids: np.ndarray, public_ids: np.ndarray, public_backbone: np.ndarray,
                      crop_projector: np.ndarray, neighbours: int = 5) -> np.ndarray:
    """float32 (N, Db + Dp) for N crops: the mean backbone embedding (rows of ``public_backbone``, ids
    ``public_ids``) of each crop's first ``neighbours`` neighbours (``neighbour_ids`` (N, k), nearest first),
    then the crop's projector embedding (``crop_projector`` (N, Dp)).

    Example:
        >>> attack_conditions(np.array([["x1", "x2", "x3"]]), np.array(["x1", "x2", "x3"]),
        ...                   np.array([[0.0], [2.0], [9.0]]), np.array([[5.0, 6.0]]), neighbours=2).tolist()
        [[1.0, 5.0, 6.0]]
    """
    neighbour_ids = np.asarray(neighbour_ids)
    if neighbour_ids.ndim != 2 or len(neighbour_ids) != len(crop_projector):
        raise DataError(f"attack conditions need one row of neighbours per crop: neighbours {neighbour_ids.shape}, "
                        f"projector embeddings {crop_projector.shape}")
    if not 1 <= neighbours <= neighbour_ids.shape[1]:
        raise DataError(f"reconstruct.neighbours = {neighbours}, but the attack kept {neighbour_ids.shape[1]} "
                        "neighbours per crop (attack.k): use at most that many")
    nearest = neighbour_ids[:, :neighbours]
    rows = index_of_ids(public_ids, nearest.ravel(), "the crops' public neighbours").reshape(nearest.shape)
    mean = public_backbone[rows].mean(axis=1)
    return np.concatenate([mean, crop_projector], axis=1).astype(np.float32)
