"""The judge: a classifier of full public images that labels each reconstruction (issue 15's number).

It trains with labels on X's full images only, resized to the decoder's side, so that it has seen neither
the attacked images (A, B) nor the control's (T); its accuracy on T's full images says how far its labels
of reconstructions can be trusted. It is the correlation classifier's network and training
(:mod:`dejavu.evaluate.correlation`) on other inputs: one classifier code, two uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dejavu.data.augment import normalise, resized
from dejavu.evaluate.correlation import (
    ClassifierSettings, CorrelationClassifier, calibration, fit_correlation_classifier, predict_probabilities,
)


def judge_inputs(images01: torch.Tensor, side: int) -> torch.Tensor:
    """Float (N, 3, h, w) images in [0, 1] as the judge sees them: resized to ``side``, normalised."""
    return normalise(resized(images01, side))


def fit_judge(images01: torch.Tensor, labels: np.ndarray, n_classes: int, epochs: int, seed: int,
              state_path: Path | None = None) -> CorrelationClassifier:
    """Train the judge on X's full images (float (N, 3, s, s) in [0, 1]) and their labels."""
    settings = ClassifierSettings(epochs=epochs)
    return fit_correlation_classifier(normalise(images01), labels, n_classes, settings, seed,
                                      state_path=state_path, description="judge (X's full images)")


def judge_labels(judge: CorrelationClassifier, images01: torch.Tensor, side: int) -> np.ndarray:
    """int (N,): the judge's class for each image (float (N, 3, h, w) in [0, 1])."""
    if not len(images01):
        return np.zeros(0, dtype=np.int64)
    return predict_probabilities(judge, judge_inputs(images01, side)).argmax(axis=1).astype(np.int64)


def judge_quality(judge: CorrelationClassifier, images01: torch.Tensor, labels: np.ndarray, side: int) -> dict:
    """Accuracy, mean confidence, ECE, NLL and Brier score of the judge on held-out full images (T's)."""
    return calibration(predict_probabilities(judge, judge_inputs(images01, side)), np.asarray(labels))
