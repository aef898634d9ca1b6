"""Optimizers by the names the wizard offers, with the user's extra arguments.

``build_optimizer`` checks ``optimizer_args`` against the chosen optimizer's
own signature (an unknown name is the user's typo, reported with the
allowed names), turns JSON lists into the tuples optimizers expect, and
falls back from the bitsandbytes 8-bit optimizers to their 32-bit twins
only when a real 8-bit step fails on the training device.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import torch

from easytrain.catalog import ADAPTIVE_OPTIMIZERS as SELF_TUNING, OPTIMIZERS
from easytrain.errors import UserError

FALLBACKS = {"AdamW8bit": "AdamW", "Lion8bit": "Lion"}
# Arguments that are the optimizer's plumbing, not a setting a user should pass.
_RESERVED = {"self", "params", "lr", "args", "foreach", "capturable", "differentiable", "fused", "fsdp_in_use"}


@dataclass
class BuiltOptimizer:
    optimizer: torch.optim.Optimizer
    name: str                               # the optimizer actually used
    notes: list[str] = field(default_factory=list)   # fallbacks and the like, for Message events


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): the sign of an interpolated momentum, decoupled weight decay."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0):
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), decay = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                p.mul_(1.0 - lr * decay)
                update = exp_avg.mul(beta1).add_(p.grad, alpha=1.0 - beta1).sign_()
                p.add_(update, alpha=-lr)
                exp_avg.mul_(beta2).add_(p.grad, alpha=1.0 - beta2)
        return loss


def _bnb():
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    import bitsandbytes

    return bitsandbytes


def _prodigy():
    from prodigyopt import Prodigy

    return Prodigy


def _dadapt_adam():
    from dadaptation import DAdaptAdam

    return DAdaptAdam


def _adafactor():
    from transformers.optimization import Adafactor

    return Adafactor


# One implementation per catalog name (imported only when chosen).
OPTIMIZER_CLASSES: dict[str, Callable[[], type]] = {
    "AdamW8bit": lambda: _bnb().optim.AdamW8bit,
    "AdamW": lambda: torch.optim.AdamW,
    "Lion": lambda: Lion,
    "Lion8bit": lambda: _bnb().optim.Lion8bit,
    "Prodigy": _prodigy,
    "DAdaptAdam": _dadapt_adam,
    "SGDNesterov": lambda: torch.optim.SGD,
    "Adafactor": _adafactor,
}


def _optimizer_class(name: str):
    if name not in OPTIMIZER_CLASSES:
        raise UserError(f"optimizer: unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    return OPTIMIZER_CLASSES[name]()


def allowed_args(cls) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [p for p in params if p not in _RESERVED and params[p].kind not in (
        inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def _normalise_args(name: str, cls, args: dict[str, Any]) -> dict[str, Any]:
    """User args checked against the optimizer's signature; lists become tuples."""
    allowed = allowed_args(cls)
    unknown = [key for key in args if key not in allowed]
    if unknown:
        raise UserError(
            f"optimizer_args: {name} has no argument {', '.join(repr(k) for k in unknown)}; "
            f"{name} accepts: {', '.join(allowed)}")
    return {key: tuple(value) if isinstance(value, list) else value for key, value in args.items()}


def eight_bit_problem(name: str, device: torch.device | str) -> Optional[str]:
    """Why bitsandbytes' 8-bit optimizer cannot step on ``device``, or None if it can.

    Tried for real: a parameter large enough to get 8-bit state takes one step.
    """
    try:
        cls = _optimizer_class(name)
        probe = torch.nn.Parameter(torch.ones(4096, device=device))
        optimizer = cls([probe], lr=1e-3)
        probe.grad = torch.ones_like(probe)
        optimizer.step()
        if not any(t.dtype == torch.uint8 for t in optimizer.state[probe].values() if torch.is_tensor(t)):
            return "bitsandbytes kept 32-bit state on this device"
    except Exception as exc:  # any failure of the library on this machine means: fall back
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"bitsandbytes cannot run here ({type(exc).__name__}: {first_line[:160]})"
    return None


def _check_group_lrs(name: str, groups: list[dict]) -> None:
    lrs = [g["lr"] for g in groups if g["lr"] != 0]
    if len(set(lrs)) > 1:
        named = ", ".join(f"{g.get('name', 'group')} {g['lr']:g}" for g in groups)
        raise UserError(
            f"unet_lr / text_encoder_lr: {name} sets its own step size and needs the same learning "
            f"rate for every part it trains (or 0 for a part), got {named}; 1.0 for both is usual")


def build_optimizer(name: str, param_groups: Iterable[dict], *, args: Optional[dict] = None,
                    device: torch.device | str = "cpu") -> BuiltOptimizer:
    """The optimizer ``name`` over ``param_groups`` (dicts with params, lr and a name).

    ``args`` are the optimizer_args answer (plan.optimizer.args), passed as keyword arguments.
    """
    groups = [dict(g) for g in param_groups]
    if not groups:
        raise UserError("nothing to train: no trainable parameters (check train_parts and the learning rates)")
    cls = _optimizer_class(name)
    kwargs = _normalise_args(name, cls, dict(args or {}))
    notes: list[str] = []
    used = name

    if name in FALLBACKS:
        problem = eight_bit_problem(name, device)
        if problem:
            used = FALLBACKS[name]
            cls = _optimizer_class(used)
            keep = set(allowed_args(cls))
            dropped = sorted(k for k in kwargs if k not in keep)
            kwargs = {k: v for k, v in kwargs.items() if k in keep}
            note = f"{name} is not available: {problem}. Using {used} (32-bit) instead."
            if dropped:
                note += f" Ignored optimizer_args it does not take: {', '.join(dropped)}."
            notes.append(note)

    if name in SELF_TUNING:
        _check_group_lrs(name, groups)
    if name == "SGDNesterov":
        kwargs.setdefault("momentum", 0.9)
        kwargs.setdefault("nesterov", True)
    default_lr = groups[0]["lr"]
    if name == "Adafactor":
        kwargs.setdefault("relative_step", False)
        kwargs.setdefault("scale_parameter", False)
        kwargs.setdefault("warmup_init", False)
        if kwargs["relative_step"]:
            # Adafactor then sizes its own steps and ignores the groups' rates.
            default_lr = None
            notes.append("Adafactor with relative_step=True chooses its own learning rate; "
                         "the learning rates in the answers only show in the logs.")
    if used == "AdamW" and _fusable(groups):
        kwargs["fused"] = True  # one kernel for all adapters: measured faster (bench/step_overhead.py --variants)
    try:
        optimizer = cls(groups, lr=default_lr, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"optimizer_args: {used} rejected {kwargs}: {exc}") from None
    return BuiltOptimizer(optimizer, used, notes)


def _fusable(groups: list[dict]) -> bool:
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cuda", "cpu") for p in params)


def effective_lrs(optimizer: torch.optim.Optimizer) -> tuple[float, ...]:
    """The step size per group; for Prodigy/DAdaptAdam the adapted d * lr."""
    return tuple(float(g["lr"]) * float(g.get("d", 1.0)) for g in optimizer.param_groups)
