"""The conventional metrics of one model, next to the memorization test: kNN accuracy and linear probe.

Both are measured on *full* images: the model's own training images ("train") against the held-out set
T ("test"). kNN votes among the public set X (labelled, trained on by neither model); the linear probe
is fitted on the training images' features. Neither looks at periphery crops, which is why neither sees
déjà vu memorization (Meehan et al., 2023): a model can generalise as well as its reference and still
reveal its training images' objects from their backgrounds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from dejavu.evaluate.knn import knn_accuracy
from dejavu.evaluate.probe import linear_probe
from dejavu.models.encoder import Encoder, check_layer

NOTE = (
    "kNN accuracy: top-1 majority vote of the k nearest (L2) full images of the public set X; linear probe: "
    "multinomial logistic regression on standardised frozen features, fitted on the model's own training images. "
    "'train' = the model's own training images (full), 'test' = the held-out set T (full); gap = train - test. "
    "These metrics judge full images only: they do not measure what a model reveals from a background crop of "
    "its training images (deja vu memorization)."
)


def evaluation_layers(attack_layer: str) -> list[str]:
    """The backbone (the conventional layer) and the attack's layer when it is a different one."""
    return ["backbone"] if attack_layer == "backbone" else ["backbone", attack_layer]


class LayerStack(torch.nn.Module):
    """An encoder that embeds at several layers in one pass: the layers' features side by side.

    ``embed(images, key)`` (``key`` = ``"+".join(layers)``, as :func:`embed_batches` passes a layer) runs
    the backbone once and the projector up to each requested depth, exactly as :meth:`Encoder.embed`;
    :meth:`split` cuts the concatenated features back into one array per layer.
    """

    def __init__(self, encoder: Encoder, layers: Sequence[str]):
        super().__init__()
        for layer in layers:
            if layer not in encoder.layers:
                check_layer(layer, encoder.projector_spec)
        self.encoder = encoder
        self.layers = list(layers)
        self.key = "+".join(self.layers)
        self.widths: list[int] = []

    def embed(self, images: torch.Tensor, key: str) -> torch.Tensor:
        if key != self.key:
            raise ValueError(f"this stack embeds at {self.key!r}, asked for {key!r}")
        features = self.encoder.backbone(images)
        parts = [self.encoder.head(features, layer) for layer in self.layers]
        self.widths = [part.shape[1] for part in parts]
        return torch.cat(parts, dim=1)

    def split(self, stacked: np.ndarray) -> dict[str, np.ndarray]:
        """{layer: float32 (N, D_layer)} from the concatenated features of :meth:`embed`."""
        if not self.widths:
            raise ValueError("embed a batch first: the layer widths are known after one")
        edges = np.cumsum([0, *self.widths])
        if stacked.shape[1] != edges[-1]:
            raise ValueError(f"expected {edges[-1]} stacked features, found {stacked.shape[1]}")
        return {layer: stacked[:, lo:hi] for layer, lo, hi in zip(self.layers, edges[:-1], edges[1:])}


def _with_gap(train: float, test: float) -> dict[str, float]:
    return {"train": float(train), "test": float(test), "gap": float(train) - float(test)}


def conventional_metrics(
    public: np.ndarray, public_labels: np.ndarray, train: np.ndarray, train_labels: np.ndarray,
    test: np.ndarray, test_labels: np.ndarray, *, n_classes: int, k: int = 20, probe_epochs: int = 100,
    backend: str = "faiss", seed: int = 0, device: str | torch.device | None = None,
) -> dict[str, dict[str, float]]:
    """kNN accuracy (database ``public``) and linear probe (fitted on ``train``) of one model at one layer.

    Returns ``{"knn": {"train", "test", "gap"}, "linear_probe": {"train", "test", "gap"}}`` (accuracies in
    [0, 1], gap = train - test). ``device``: where the probe is fitted.
    """
    public_labels, train_labels, test_labels = (np.asarray(v, dtype=np.int64)
                                                for v in (public_labels, train_labels, test_labels))
    knn_train = knn_accuracy(public, public_labels, train, train_labels, k=k, backend=backend)
    knn_test = knn_accuracy(public, public_labels, test, test_labels, k=k, backend=backend)
    probe = linear_probe(train, train_labels, test, test_labels, n_classes=n_classes, epochs=probe_epochs, seed=seed,
                         device=device)
    return {"knn": _with_gap(knn_train, knn_test),
            "linear_probe": _with_gap(probe["train_accuracy"], probe["test_accuracy"])}
