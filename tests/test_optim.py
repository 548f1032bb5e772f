"""EMA teachers' momentum schedule and update, and the LARS optimiser, against hand-computed values."""

from __future__ import annotations

import copy
import doctest
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

import dejavu.train.ema as ema
import dejavu.train.optim as optim
from dejavu.train.ema import ema_update, momentum_schedule
from dejavu.train.optim import LARS, OPTIMIZERS, build_optimizer


def test_momentum_schedule_runs_from_base_to_final_along_a_cosine():
    m = momentum_schedule(0.996, 1.0, 101)
    assert m.shape == (101,)
    assert m[0] == pytest.approx(0.996, abs=1e-12)
    assert m[-1] == pytest.approx(1.0, abs=1e-12)
    assert m[50] == pytest.approx(0.998, abs=1e-12)  # half way along a half cosine: the mean
    # A quarter of the way: 1 - 0.004 * (cos(pi / 4) + 1) / 2.
    assert m[25] == pytest.approx(1.0 - 0.004 * (math.cos(math.pi / 4) + 1) / 2, abs=1e-12)
    assert np.all(np.diff(m) > 0)
    assert momentum_schedule(0.99, 0.999, 1).tolist() == [0.99]


def _pair():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    student = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        student[1].weight.fill_(3.0)
        student[1].running_mean.fill_(7.0)
    return teacher, student


@pytest.mark.parametrize("momentum", [1.0, 0.0, 0.5, 0.9])
def test_ema_update_mixes_parameters(momentum):
    teacher, student = _pair()
    before = [p.detach().clone() for p in teacher.parameters()]
    ema_update(teacher, student, momentum)
    for old, new, s in zip(before, teacher.parameters(), student.parameters()):
        expected = momentum * old + (1 - momentum) * s.detach()
        assert torch.allclose(new, expected, atol=1e-6)
        if momentum == 1.0:
            assert torch.equal(new, old)
        if momentum == 0.0:
            assert torch.equal(new, s)
    # The teacher's own BatchNorm statistics are kept (see ema_update's docstring).
    assert torch.equal(teacher[1].running_mean, torch.zeros(3))


def test_ema_update_at_half_momentum_averages_by_hand():
    teacher, student = nn.Linear(1, 2), nn.Linear(1, 2)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([[1.0], [-2.0]]))
        student.weight.copy_(torch.tensor([[3.0], [4.0]]))
        teacher.bias.copy_(torch.tensor([0.0, 10.0]))
        student.bias.copy_(torch.tensor([1.0, 0.0]))
    ema_update(teacher, student, 0.5)
    assert teacher.weight.tolist() == [[2.0], [1.0]]
    assert teacher.bias.tolist() == [0.5, 5.0]


def test_ema_update_refuses_mismatched_modules():
    with pytest.raises(ValueError, match="parameters"):
        ema_update(nn.Linear(2, 2), nn.Linear(2, 2, bias=False), 0.9)


def _weight_and_bias():
    weight = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    bias = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    return weight, bias


def _norm(values):
    return math.sqrt(sum(v * v for v in values))


def test_lars_two_steps_match_hand_computation():
    lr, wd, eta, mom = 0.5, 0.5, 0.1, 0.9
    weight, bias = _weight_and_bias()
    optimizer = LARS([weight, bias], lr=lr, weight_decay=wd, momentum=mom, eta=eta)

    # Step 1. Weight: u = g + wd * w = [2.5, 2]; trust = eta * ||w|| / ||u|| = 0.1 * 5 / sqrt(10.25).
    weight.grad = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    bias.grad = torch.tensor([0.5, 0.5], dtype=torch.float64)
    optimizer.step()
    w0 = [3.0, 4.0]
    u1 = [1.0 + wd * 3.0, 0.0 + wd * 4.0]
    trust1 = eta * _norm(w0) / _norm(u1)
    mu_w = [trust1 * u for u in u1]
    w1 = [w - lr * m for w, m in zip(w0, mu_w)]
    # The bias is 1-D: no weight decay, no trust ratio, plain momentum SGD.
    mu_b = [0.5, 0.5]
    b1 = [1.0 - lr * 0.5, -2.0 - lr * 0.5]
    assert weight.detach().flatten().tolist() == pytest.approx(w1, abs=1e-12)
    assert bias.detach().tolist() == pytest.approx(b1, abs=1e-12)
    assert b1 == [0.75, -2.25]

    # Step 2: the momentum buffers carry the first step.
    weight.grad = torch.tensor([[0.0, -1.0]], dtype=torch.float64)
    bias.grad = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    optimizer.step()
    u2 = [0.0 + wd * w1[0], -1.0 + wd * w1[1]]
    trust2 = eta * _norm(w1) / _norm(u2)
    mu_w = [mom * m + trust2 * u for m, u in zip(mu_w, u2)]
    w2 = [w - lr * m for w, m in zip(w1, mu_w)]
    mu_b = [mom * m + g for m, g in zip(mu_b, [-1.0, 2.0])]
    b2 = [b - lr * m for b, m in zip(b1, mu_b)]
    assert weight.detach().flatten().tolist() == pytest.approx(w2, abs=1e-12)
    assert bias.detach().tolist() == pytest.approx(b2, abs=1e-12)
    assert b2 == pytest.approx([0.75 - 0.5 * (-0.55), -2.25 - 0.5 * 2.45])


def test_lars_without_exclusion_decays_and_scales_the_bias_too():
    _, bias = _weight_and_bias()
    optimizer = LARS([bias], lr=1.0, weight_decay=0.5, eta=0.1, exclude_1d=False)
    bias.grad = torch.tensor([0.5, 0.5], dtype=torch.float64)
    optimizer.step()
    u = [0.5 + 0.5 * 1.0, 0.5 + 0.5 * -2.0]  # [1, -0.5]
    trust = 0.1 * _norm([1.0, -2.0]) / _norm(u)
    assert bias.detach().tolist() == pytest.approx([1.0 - trust * u[0], -2.0 - trust * u[1]], abs=1e-12)


def test_lars_trust_ratio_is_one_when_a_norm_is_zero():
    weight = nn.Parameter(torch.zeros(1, 2, dtype=torch.float64))
    optimizer = LARS([weight], lr=0.1)
    # ||w|| = 0: the trust ratio falls back to 1, a plain SGD step.
    weight.grad = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    optimizer.step()
    assert weight.detach().flatten().tolist() == pytest.approx([-0.1, -0.2], abs=1e-12)
    # ||g|| = 0 (no weight decay): trust 1 again, no division by zero; the momentum alone moves w.
    weight.grad = torch.zeros(1, 2, dtype=torch.float64)
    optimizer.step()
    assert weight.detach().flatten().tolist() == pytest.approx([-0.1 - 0.1 * 0.9, -0.2 - 0.1 * 1.8], abs=1e-12)


def _lars_model_and_grads():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(6)]
    return model, grads


def _apply(model, optimizer, grads):
    for p, g in zip(model.parameters(), grads):
        p.grad = g.clone()
    optimizer.step()


def test_lars_state_dict_round_trip_resumes_identically():
    model, grads = _lars_model_and_grads()
    optimizer = LARS(model.parameters(), lr=0.3, weight_decay=1e-2, eta=0.01)
    for g in grads[:3]:
        _apply(model, optimizer, g)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)

    resumed = copy.deepcopy(model)
    resumed.load_state_dict(saved["model"])
    resumed_optimizer = LARS(resumed.parameters(), lr=0.3, weight_decay=1e-2, eta=0.01)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    fresh = copy.deepcopy(model)
    fresh_optimizer = LARS(fresh.parameters(), lr=0.3, weight_decay=1e-2, eta=0.01)

    for g in grads[3:]:
        _apply(model, optimizer, g)
        _apply(resumed, resumed_optimizer, g)
        _apply(fresh, fresh_optimizer, g)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    # Without the momentum buffers the run would diverge from the uninterrupted one.
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))


def test_lars_minimises_least_squares():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(64, 8, generator=generator)
    b = a @ torch.randn(8, 1, generator=generator) + 0.5
    weight = nn.Parameter(0.1 * torch.randn(1, 8, generator=generator))
    bias = nn.Parameter(torch.zeros(1))
    # The bias escapes the trust ratio, so it takes a plain-SGD learning rate in its own group.
    optimizer = LARS([{"params": [weight]}, {"params": [bias], "lr": 0.05}], lr=2.0)
    losses = []
    for _ in range(200):
        loss = ((a @ weight.T + bias - b) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_lars_rejects_bad_hyper_parameters():
    p = [nn.Parameter(torch.zeros(2, 2))]
    for kwargs in ({"lr": -1.0}, {"lr": 0.1, "momentum": 1.0}, {"lr": 0.1, "eta": 0.0},
                   {"lr": 0.1, "weight_decay": -1.0}):
        with pytest.raises(ValueError):
            LARS(p, **kwargs)


def test_build_optimizer_knows_lars_and_lists_valid_names():
    params = [nn.Parameter(torch.zeros(2, 2))]
    lars = build_optimizer(params, "lars", 0.2, 1e-6, 0.8)
    assert isinstance(lars, LARS)
    group = lars.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["momentum"], group["eta"], group["exclude_1d"]) == (
        0.2, 1e-6, 0.8, 0.001, True)
    assert build_optimizer(params, "lars", 0.2, 1e-6).param_groups[0]["momentum"] == 0.9
    sgd = build_optimizer(params, "sgd", 0.1, 1e-4, 0.5)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.5
    assert isinstance(build_optimizer(params, "adamw", 1e-3, 0.05), torch.optim.AdamW)
    assert OPTIMIZERS == ("adamw", "sgd", "lars")
    with pytest.raises(ValueError, match=r"'adam'.*'adamw', 'sgd', 'lars'"):
        build_optimizer(params, "adam", 0.1, 0.0)


@pytest.mark.parametrize("module", [ema, optim])
def test_docstring_examples(module):
    results = doctest.testmod(module)
    assert results.attempted > 0 and results.failed == 0
