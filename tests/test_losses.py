"""SimCLR, Barlow Twins, BYOL, DINO and supervised losses against hand-computed values."""

from __future__ import annotations

import doctest
import math
import multiprocessing

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import dejavu.losses.barlow as barlow
import dejavu.losses.byol as byol
import dejavu.losses.dino as dino
import dejavu.losses.simclr as simclr
import dejavu.losses.supervised as supervised
from dejavu.losses.barlow import barlow_twins_loss, cross_correlation
from dejavu.losses.byol import byol_loss
from dejavu.losses.dino import dino_loss, teacher_temperatures, update_center
from dejavu.losses.simclr import nt_xent_loss
from dejavu.losses.supervised import supervised_loss

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


# BYOL, DINO and the supervised baseline.


def _softmax(xs):
    exps = [math.exp(x) for x in xs]
    return [e / sum(exps) for e in exps]


def _log_softmax(xs):
    log_total = math.log(sum(math.exp(x) for x in xs))
    return [x - log_total for x in xs]


def _cross_entropy(q, log_p):
    return -sum(a * b for a, b in zip(q, log_p))


def test_byol_loss_matches_hand_values():
    p = torch.tensor([[1.0, 0.0]])
    assert float(byol_loss(p, torch.tensor([[2.0, 0.0]]))) == pytest.approx(0.0, abs=1e-6)  # same direction
    assert float(byol_loss(p, torch.tensor([[-3.0, 0.0]]))) == pytest.approx(4.0, abs=1e-6)  # opposite
    assert float(byol_loss(p, torch.tensor([[0.0, 5.0]]))) == pytest.approx(2.0, abs=1e-6)  # orthogonal
    # The batch mean of the three: (0 + 4 + 2) / 3.
    batch = byol_loss(p.repeat(3, 1), torch.tensor([[2.0, 0.0], [-3.0, 0.0], [0.0, 5.0]]))
    assert float(batch) == pytest.approx(2.0, abs=1e-6)
    # 60 degrees apart: 2 - 2 cos(pi / 3) = 1.
    assert float(byol_loss(p, torch.tensor([[0.5, math.sqrt(3) / 2]]))) == pytest.approx(1.0, abs=1e-6)


def test_byol_loss_is_scale_invariant_and_trains_only_the_prediction():
    generator = torch.Generator().manual_seed(0)
    p = torch.randn(8, 5, generator=generator, requires_grad=True)
    t = torch.randn(8, 5, generator=generator, requires_grad=True)
    assert byol_loss(3 * p, 0.2 * t).item() == pytest.approx(byol_loss(p, t).item(), rel=1e-5)
    byol_loss(p, t).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert t.grad is None


def test_dino_loss_matches_hand_computation():
    center = torch.tensor([[0.5, 0.0]])
    teacher = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    student = [torch.tensor([[0.2, 0.1]]), torch.tensor([[0.0, 0.3]])]
    # q_i = softmax((t_i - c) / 0.5), log p_j = log_softmax(s_j / 0.25); pairs (1, 2) and (2, 1) only.
    q = [_softmax([(1.0 - 0.5) / 0.5, 0.0]), _softmax([(0.0 - 0.5) / 0.5, 1.0 / 0.5])]
    log_p = [_log_softmax([0.2 / 0.25, 0.1 / 0.25]), _log_softmax([0.0, 0.3 / 0.25])]
    expected = (_cross_entropy(q[0], log_p[1]) + _cross_entropy(q[1], log_p[0])) / 2
    value = dino_loss(student, teacher, center, student_temp=0.25, teacher_temp=0.5)
    assert float(value) == pytest.approx(expected, rel=1e-6)
    # The batch mean: the same pair of images twice gives the same value.
    doubled = dino_loss([torch.cat([s, s]) for s in student], [torch.cat([t, t]) for t in teacher], center,
                        student_temp=0.25, teacher_temp=0.5)
    assert float(doubled) == pytest.approx(expected, rel=1e-6)


def test_dino_loss_skips_same_view_pairs():
    # A cold teacher gives one-hot targets: view 1 -> class 0, view 2 -> class 1.
    teacher = [torch.tensor([[10.0, 0.0]]), torch.tensor([[0.0, 10.0]])]
    # Student (temperature 1): p_1 = [1/2, 1/2], p_2 = [1/4, 3/4], local crop p_3 = [3/4, 1/4].
    student = [torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(3)]]), torch.tensor([[math.log(3), 0.0]])]
    value = float(dino_loss(student, teacher, torch.zeros(1, 2), student_temp=1.0, teacher_temp=0.04))
    # 2 * 3 - 2 = 4 pairs: (1, 2) -log 1/4, (1, 3) -log 3/4, (2, 1) -log 1/2, (2, 3) -log 1/4.
    four_pairs = (math.log(4) + math.log(4 / 3) + math.log(2) + math.log(4)) / 4
    all_six = (4 * four_pairs + math.log(2) + math.log(4 / 3)) / 6  # with (1, 1) and (2, 2)
    assert value == pytest.approx(four_pairs, rel=1e-6)
    assert value != pytest.approx(all_six, rel=1e-3)


def test_dino_loss_trains_only_the_student():
    generator = torch.Generator().manual_seed(0)
    student = [torch.randn(4, 6, generator=generator, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(4, 6, generator=generator, requires_grad=True) for _ in range(2)]
    dino_loss(student, teacher, torch.zeros(1, 6)).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)
    with pytest.raises(ValueError):
        dino_loss(student[:1], teacher, torch.zeros(1, 6))
    with pytest.raises(ValueError):
        dino_loss(student[:1], teacher[:1], torch.zeros(1, 6))


def test_update_center_matches_hand_computation():
    center = torch.tensor([[1.0, -1.0]])
    teacher = [torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[5.0, 6.0], [7.0, 8.0]], requires_grad=True)]
    new = update_center(center, teacher, momentum=0.9)
    # The mean over all four rows is [4, 5]: 0.9 * [1, -1] + 0.1 * [4, 5].
    assert new.shape == (1, 2)
    assert new.flatten().tolist() == pytest.approx([1.3, -0.4], abs=1e-6)
    assert center.tolist() == [[1.0, -1.0]]  # pure: the old centre is untouched
    assert not new.requires_grad
    assert update_center(center, teacher, 0.0).flatten().tolist() == pytest.approx([4.0, 5.0])


def _center_worker(rank, path, results):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    try:
        # Uneven shards: rank 0 has one row, rank 1 two; the global mean is [3, 4].
        rows = [[[0.0, 1.0]], [[3.0, 4.0], [6.0, 7.0]]][rank]
        new = update_center(torch.zeros(1, 2), [torch.tensor(rows)], momentum=0.5)
        results[rank] = new.flatten().tolist()
    finally:
        dist.destroy_process_group()


def test_update_center_averages_over_processes(tmp_path):
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        results = manager.dict()
        workers = [context.Process(target=_center_worker, args=(rank, tmp_path / "store", results))
                   for rank in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert [w.exitcode for w in workers] == [0, 0]
        assert results[0] == pytest.approx([1.5, 2.0]) and results[1] == pytest.approx([1.5, 2.0])


def test_teacher_temperatures_warm_up_linearly_then_hold():
    temps = teacher_temperatures(0.04, 0.07, 50, 100, 10)
    assert temps.shape == (1000,)
    assert temps[0] == pytest.approx(0.04) and temps[499] == pytest.approx(0.07)
    assert temps[250] == pytest.approx(0.04 + 0.03 * 250 / 499)
    assert np.all(np.diff(temps[:500]) > 0)
    assert np.all(temps[500:] == 0.07)
    # A run shorter than the warm-up follows DINO's ramp and stops partway up it: 50 epochs x 2 steps
    # make a 100-step ramp of 0.03 / 99 per step; 10 epochs take its first 20 steps, ending at
    # 0.04 + 0.03 * 19 / 99 = 0.045758 (the old schedule squeezed the ramp into the run to end at 0.07).
    short = teacher_temperatures(0.04, 0.07, 50, 10, 2)
    assert short.shape == (20,)
    assert short[0] == pytest.approx(0.04) and short[-1] == pytest.approx(0.04 + 0.03 * 19 / 99)
    np.testing.assert_allclose(short, teacher_temperatures(0.04, 0.07, 50, 100, 2)[:20])
    assert np.all(np.diff(short) > 0) and short.max() < 0.046
    # By hand: warm-up 2 epochs x 2 steps = 0.04, 0.05, 0.06, 0.07; a 1-epoch run takes the first two.
    np.testing.assert_allclose(teacher_temperatures(0.04, 0.07, 2, 1, 2), [0.04, 0.05])
    np.testing.assert_allclose(teacher_temperatures(0.04, 0.07, 2, 3, 2), [0.04, 0.05, 0.06, 0.07, 0.07, 0.07])
    # The run ending exactly where the warm-up does reaches 0.07 at its last step.
    assert teacher_temperatures(0.04, 0.07, 2, 2, 2)[-1] == pytest.approx(0.07)
    assert np.all(teacher_temperatures(0.04, 0.07, 0, 3, 2) == 0.07)


def test_supervised_loss_matches_hand_values():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    log_p = [_log_softmax([1.0, 2.0, 3.0]), _log_softmax([0.0, 0.0, 0.0])]
    plain = (-log_p[0][0] - log_p[1][2]) / 2
    assert float(supervised_loss(logits, labels)) == pytest.approx(plain, rel=1e-6)
    assert -log_p[1][2] == pytest.approx(math.log(3))
    # Smoothing 0.3 over 3 classes: target 0.7 + 0.1 on the label, 0.1 on each other class.
    smoothed = [
        _cross_entropy([0.8, 0.1, 0.1], log_p[0]),
        _cross_entropy([0.1, 0.1, 0.8], log_p[1]),
    ]
    value = supervised_loss(logits, labels, label_smoothing=0.3)
    assert float(value) == pytest.approx(sum(smoothed) / 2, rel=1e-6)
    assert float(value) != pytest.approx(plain, rel=1e-3)
    assert float(value) == pytest.approx(float(F.cross_entropy(logits, labels, label_smoothing=0.3)), rel=1e-6)


@pytest.mark.parametrize("module", [byol, dino, supervised])
def test_new_docstring_examples(module):
    results = doctest.testmod(module)
    assert results.attempted > 0 and results.failed == 0
