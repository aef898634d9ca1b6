"""Learning-rate schedules: hand-checked values and agreement with diffusers' get_scheduler."""

import math

import pytest
import torch

from easytrain.errors import UserError
from easytrain.train.schedulers import SCHEDULERS, build_scheduler, schedule_function

TOTAL, WARMUP = 100, 10


def lrs_over_run(name, total=TOTAL, warmup=WARMUP, **kw):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=2.0)
    sched = build_scheduler(opt, name, total_steps=total, warmup_steps=warmup, **kw)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_constant_has_no_warmup():
    assert lrs_over_run("constant") == [2.0] * TOTAL


@pytest.mark.parametrize("name", [n for n in SCHEDULERS if n != "constant"])
def test_every_other_schedule_warms_up_linearly(name):
    lrs = lrs_over_run(name, restarts=3, power=2.0)
    for step in range(WARMUP):
        assert lrs[step] == pytest.approx(2.0 * step / WARMUP)
    assert lrs[WARMUP] == pytest.approx(2.0)


def test_hand_computed_values():
    f = schedule_function("cosine", total_steps=TOTAL, warmup_steps=WARMUP)
    assert f(55) == pytest.approx(0.5)                         # half way through the decay
    assert f(100) == pytest.approx(0.0)
    f = schedule_function("linear", total_steps=TOTAL, warmup_steps=WARMUP)
    assert f(55) == pytest.approx(0.5)
    assert f(91) == pytest.approx(9 / 90)
    f = schedule_function("polynomial", total_steps=TOTAL, warmup_steps=WARMUP, power=2.0)
    assert f(55) == pytest.approx(0.25)
    assert f(101) == 0.0
    f = schedule_function("cosine_with_restarts", total_steps=TOTAL, warmup_steps=WARMUP, restarts=3)
    assert f(40) == pytest.approx(1.0)                         # second cycle starts at the full rate
    assert f(25) == pytest.approx(0.5)                         # middle of the first 30-step cycle
    assert f(39) == pytest.approx(0.5 * (1 + math.cos(math.pi * 29 / 30)))
    f = schedule_function("constant_with_warmup", total_steps=TOTAL, warmup_steps=WARMUP)
    assert f(5) == 0.5 and f(99) == 1.0


@pytest.mark.parametrize("name", ["cosine", "cosine_with_restarts", "linear", "polynomial", "constant_with_warmup"])
def test_matches_diffusers_get_scheduler(name):
    from diffusers.optimization import get_scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    ref = get_scheduler(name, opt, num_warmup_steps=WARMUP, num_training_steps=TOTAL,
                        num_cycles=3, power=1.5)
    ours = schedule_function(name, total_steps=TOTAL, warmup_steps=WARMUP, restarts=3, power=1.5)
    for step in range(TOTAL):
        assert ours(step) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-7), step
        opt.step()
        ref.step()


def test_unknown_name_is_a_user_error():
    with pytest.raises(UserError, match="scheduler"):
        schedule_function("cosine_annealing", total_steps=10)
