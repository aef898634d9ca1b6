"""Every optimizer builds from its answers name, takes a step and honours optimizer_args."""

import pytest
import torch

from easytrain.errors import UserError
from easytrain.train.optimizers import OPTIMIZERS, Lion, build_optimizer, effective_lrs, eight_bit_problem


def two_groups(lr_unet=1e-3, lr_te=1e-3):
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(64, 80))       # 5120 elements: big enough for 8-bit state
    b = torch.nn.Parameter(torch.randn(16))
    return [dict(params=[a], lr=lr_unet, name="unet"), dict(params=[b], lr=lr_te, name="text_encoder")]


def take_step(built, groups):
    params = [p for g in groups for p in g["params"]]
    before = [p.detach().clone() for p in params]
    loss = sum((p ** 2).sum() for p in params)
    loss.backward()
    built.optimizer.step()
    built.optimizer.zero_grad()
    return [(p - q).abs().max().item() for p, q in zip(params, before)]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_builds_and_steps(name):
    lr = 1.0 if name in ("Prodigy", "DAdaptAdam") else 1e-2
    groups = two_groups(lr, lr)
    args = {"weight_decay": 0.1, "betas": [0.9, 0.99]} if name in ("AdamW", "AdamW8bit", "Lion", "Lion8bit") else {}
    built = build_optimizer(name, groups, args=args)
    assert built.name == name            # bitsandbytes 0.50 steps 8-bit optimizers on CPU: no fallback
    assert all(change > 0 for change in take_step(built, groups))
    assert len(effective_lrs(built.optimizer)) == 2


def test_eight_bit_state_is_really_eight_bit_on_cpu():
    assert eight_bit_problem("AdamW8bit", "cpu") is None
    groups = two_groups()
    built = build_optimizer("AdamW8bit", groups)
    take_step(built, groups)
    big = groups[0]["params"][0]
    assert any(t.dtype == torch.uint8 for t in built.optimizer.state[big].values() if torch.is_tensor(t))


def test_eight_bit_falls_back_with_a_note_when_the_device_fails():
    missing = next((d for d in ("cuda", "xpu", "mps") if not getattr(torch, d).is_available()), None)
    if missing is None:
        pytest.skip("every accelerator backend is present here")
    groups = two_groups()
    built = build_optimizer("Lion8bit", groups, args={"min_8bit_size": 1, "betas": [0.9, 0.99]},
                            device=missing)
    assert built.name == "Lion" and isinstance(built.optimizer, Lion)
    assert "Lion8bit is not available" in built.notes[0] and "min_8bit_size" in built.notes[0]


def test_lists_become_tuples_and_args_reach_the_optimizer():
    built = build_optimizer("AdamW", two_groups(), args={"betas": [0.8, 0.95], "weight_decay": 0.3})
    group = built.optimizer.param_groups[0]
    assert group["betas"] == (0.8, 0.95) and group["weight_decay"] == 0.3


def test_sgd_nesterov_defaults_and_adafactor_uses_the_given_lr():
    sgd = build_optimizer("SGDNesterov", two_groups()).optimizer
    assert sgd.param_groups[0]["nesterov"] is True and sgd.param_groups[0]["momentum"] == 0.9
    ada = build_optimizer("Adafactor", two_groups()).optimizer
    assert ada.param_groups[0]["relative_step"] is False and ada.param_groups[0]["scale_parameter"] is False
    assert ada.param_groups[0]["lr"] == 1e-3


def test_unknown_argument_names_the_optimizer_and_the_argument():
    with pytest.raises(UserError) as info:
        build_optimizer("Prodigy", two_groups(1.0, 1.0), args={"weight_decay": 0.01, "betaz": [0.9, 0.99]})
    text = str(info.value)
    assert "Prodigy" in text and "'betaz'" in text and "betas" in text


def test_self_tuning_optimizers_refuse_different_rates_but_accept_zero():
    with pytest.raises(UserError, match="DAdaptAdam"):
        build_optimizer("DAdaptAdam", two_groups(1.0, 0.5))
    build_optimizer("Prodigy", two_groups(1.0, 0.0))


def test_own_lion_matches_the_paper_update():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    p.grad = torch.tensor([0.3, -0.4])
    opt.step()
    # first step: momentum is 0, so the update is sign(0.1 * g); weight decay shrinks p by lr * wd
    expected = torch.tensor([1.0, -2.0]) * (1 - 0.05) - 0.1 * torch.tensor([1.0, -1.0])
    assert torch.allclose(p.detach(), expected)
    assert torch.allclose(opt.state[p]["exp_avg"], 0.01 * torch.tensor([0.3, -0.4]))


def test_plain_adamw_uses_the_fused_step():
    import torch

    from easytrain.train.optimizers import build_optimizer

    p = torch.nn.Parameter(torch.ones(8))
    built = build_optimizer("AdamW", [{"params": [p], "lr": 1e-3, "name": "unet"}], args={"weight_decay": 0.1})
    assert built.optimizer.defaults["fused"] is True
    p.grad = torch.ones_like(p)
    built.optimizer.step()
    assert p.detach().lt(1).all()


# ---- optimizer_args: the light table that `check` uses is the optimizers' real promise ----------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from easytrain.optimizer_args import OPTIMIZER_ARGS, optimizer_args_problem  # noqa: E402
from easytrain.train.optimizers import _optimizer_class, allowed_args  # noqa: E402


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_light_table_names_exactly_the_real_arguments(name):
    assert sorted(OPTIMIZER_ARGS[name]) == sorted(allowed_args(_optimizer_class(name)))


ARG_VALUES = st.one_of(st.booleans(), st.integers(-3, 40), st.floats(-2, 2), st.none(), st.sampled_from([8, 32]),
                       st.lists(st.floats(0, 1.2), min_size=1, max_size=3), st.text(max_size=3))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(OPTIMIZERS), data=st.data())
def test_what_the_table_accepts_the_real_optimizer_accepts(name, data):
    keys = data.draw(st.lists(st.sampled_from(sorted(OPTIMIZER_ARGS[name])), max_size=3, unique=True))
    args = {key: data.draw(ARG_VALUES, label=key) for key in keys}
    problem = optimizer_args_problem(name, args)
    lr = 1.0 if name in ("Prodigy", "DAdaptAdam") else 1e-2
    groups = two_groups(lr, lr)
    if problem is None:
        build_optimizer(name, groups, args=args)   # must not raise: `check` accepted these
    else:
        assert name in problem


def test_unknown_and_wrong_arguments_are_named_by_check():
    assert "AdamW has no argument 'momentum'" in optimizer_args_problem("AdamW", {"momentum": 0.9})
    assert "betas must be two numbers" in optimizer_args_problem("Lion", {"betas": [0.9]})
    assert "needs momentum > 0" in optimizer_args_problem("SGDNesterov", {"momentum": 0})
    assert optimizer_args_problem("AdamW", {"betas": [0.9, 0.99], "weight_decay": 0.1}) is None
