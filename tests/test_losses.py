"""SimCLR and Barlow Twins losses against hand-computed values (issue 4, first part)."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import dejavu.losses.barlow as barlow
import dejavu.losses.simclr as simclr
from dejavu.losses.barlow import barlow_twins_loss, cross_correlation
from dejavu.losses.simclr import nt_xent_loss

AXES = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])


def test_nt_xent_matches_hand_computation():
    z = torch.eye(4)
    # Each of the 8 rows: its other view has cosine 1, the 6 other rows 0, itself excluded.
    assert float(nt_xent_loss(z, z, temperature=1.0)) == pytest.approx(math.log(1 + 6 / math.e), rel=1e-6)
    # At temperature 0.5 the positive logit doubles.
    assert float(nt_xent_loss(z, z, temperature=0.5)) == pytest.approx(math.log(1 + 6 / math.e ** 2), rel=1e-6)


def test_nt_xent_is_symmetric_scale_free_and_lower_for_aligned_views():
    generator = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(16, 8, generator=generator), torch.randn(16, 8, generator=generator)
    assert float(nt_xent_loss(z_a, z_b)) == pytest.approx(float(nt_xent_loss(z_b, z_a)), rel=1e-6)
    assert float(nt_xent_loss(3 * z_a, z_b)) == pytest.approx(float(nt_xent_loss(z_a, z_b)), rel=1e-5)
    assert float(nt_xent_loss(z_a, z_a + 0.01 * z_b)) < float(nt_xent_loss(z_a, z_b))


def test_barlow_twins_matches_hand_computation():
    assert float(barlow_twins_loss(AXES, AXES)) == pytest.approx(0.0, abs=1e-6)
    assert float(barlow_twins_loss(AXES, -AXES)) == pytest.approx(8.0, rel=1e-4)
    swapped = AXES[:, [1, 0]]
    # C = [[0, 1], [1, 0]]: two diagonal terms (1 - 0)^2 and two off-diagonal 1^2 weighted by lambda.
    assert torch.allclose(cross_correlation(AXES, swapped), torch.tensor([[0.0, 1.0], [1.0, 0.0]]), atol=1e-4)
    assert float(barlow_twins_loss(AXES, swapped, lambda_off_diagonal=0.5)) == pytest.approx(3.0, rel=1e-4)


def test_losses_decrease_under_sgd():
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(32, 6, generator=generator)
    noise = torch.randn(32, 6, generator=generator)
    for loss in (lambda a, b: nt_xent_loss(a, b, temperature=0.5), barlow_twins_loss):
        weight = torch.nn.Parameter(torch.eye(6) + 0.1 * torch.randn(6, 6, generator=generator))
        optimizer = torch.optim.SGD([weight], lr=0.05)
        values = []
        for _ in range(30):
            value = loss(base @ weight, (base + 0.5 * noise) @ weight)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            values.append(value.item())
        assert values[-1] < values[0]


@pytest.mark.parametrize("module", [simclr, barlow])
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0
