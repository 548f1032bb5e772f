"""Linear probe: a linear classifier on frozen, standardised features, the conventional SSL metric.

Multinomial logistic regression (``nn.Linear`` + cross-entropy + an L2 penalty on the weights), fitted
full-batch with L-BFGS: the problem is convex, so the fit does not depend on mini-batch order, and a
few hundred iterations on a few thousand rows take well under a second on a CPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def linear_probe(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray, test_labels: np.ndarray,
    *, n_classes: int, epochs: int = 100, lr: float = 1.0, weight_decay: float = 1e-3, seed: int = 0,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Fit a linear classifier on (train_features, train_labels); top-1 accuracy on both splits.

    Features are standardised with the training features' mean and standard deviation (features that
    are constant on the training set are only centred). ``epochs`` is the number of full-batch L-BFGS
    iterations (strong-Wolfe line search, step ``lr``); the loss is the mean cross-entropy plus
    ``weight_decay / 2 * ||W||^2`` (the bias is not penalised). ``seed`` draws the initial weights (from
    a private generator: torch's global random state is left alone). ``device``: where to fit (default
    the CPU; a GPU for large training sets, where each iteration is an (N, D) x (D, classes) product).

    Example:
        >>> x = np.array([[0.0], [1.0], [4.0], [5.0]], "f4")
        >>> linear_probe(x, np.array([0, 0, 1, 1]), x[[1, 2]], np.array([0, 1]), n_classes=2)
        {'train_accuracy': 1.0, 'test_accuracy': 1.0}
    """
    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    if len(train_features) == 0 or len(test_features) == 0:
        raise ValueError("the linear probe needs at least one training and one test example")
    if len(train_features) != len(train_labels) or len(test_features) != len(test_labels):
        raise ValueError("features and labels differ in length")
    if min(train_labels.min(), test_labels.min()) < 0 or max(train_labels.max(), test_labels.max()) >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes})")
    if epochs < 1:
        raise ValueError(f"epochs must be positive, found {epochs}")
    device = torch.device(device or "cpu")
    train_x = torch.as_tensor(np.asarray(train_features, dtype=np.float32)).to(device)
    test_x = torch.as_tensor(np.asarray(test_features, dtype=np.float32)).to(device)
    mean = train_x.mean(0, keepdim=True)
    std = train_x.std(0, unbiased=False, keepdim=True)
    std = torch.where(std > 1e-6 * std.max().clamp_min(1e-12), std, torch.ones_like(std))
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    y = torch.as_tensor(train_labels).to(device)

    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / float(np.sqrt(train_x.shape[1]))  # nn.Linear's default range, drawn from our generator
    layer = torch.nn.utils.skip_init(torch.nn.Linear, train_x.shape[1], n_classes)
    with torch.no_grad():
        layer.weight.copy_((torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound)
        layer.bias.copy_((torch.rand(layer.bias.shape, generator=generator) * 2 - 1) * bound)
    layer.to(device)
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=lr, max_iter=epochs, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(train_x), y) + 0.5 * weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        train_accuracy = (layer(train_x).argmax(1) == y).float().mean().item()
        test_accuracy = (layer(test_x).argmax(1) == torch.as_tensor(test_labels).to(device)).float().mean().item()
    return {"train_accuracy": float(train_accuracy), "test_accuracy": float(test_accuracy)}
