"""Which ``optimizer_args`` each optimizer takes, and what values it accepts, without importing torch.

The answers file is checked against this table, so `check` (and the wizard)
refuse what the optimizer would refuse after the model has loaded. A test
holds the table to each optimizer's real signature, and builds the real
optimizer from every value this table accepts.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

Rule = Callable[[Any], Optional[str]]  # why a value is refused, or None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _flag(value: Any) -> Optional[str]:
    return None if isinstance(value, bool) else "true or false"


def _at_least(low: float, *, above: bool = False, integer: bool = False, allow_inf: bool = False) -> Rule:
    noun = "an integer" if integer else "a number"
    words = f"{noun} {'>' if above else '>='} {low:g}"

    def rule(value: Any) -> Optional[str]:
        if allow_inf and value == math.inf and not isinstance(value, bool):
            return None
        if not _number(value) or (integer and not isinstance(value, int)):
            return words
        return words if (value <= low if above else value < low) else None
    return rule


def _any_number(value: Any) -> Optional[str]:
    return None if _number(value) else "a number"


def _beta(value: Any) -> bool:
    return _number(value) and 0 <= value < 1


def _betas(value: Any) -> Optional[str]:
    ok = isinstance(value, list) and len(value) == 2 and all(_beta(v) for v in value)
    return None if ok else "two numbers from 0 to below 1, e.g. 0.9,0.999"


def _optional_beta(value: Any) -> Optional[str]:
    return None if value is None or _beta(value) else "a number from 0 to below 1, or null"


def _eps_pair(value: Any) -> Optional[str]:
    ok = isinstance(value, list) and len(value) == 2 and all(_number(v) and v >= 0 for v in value)
    return None if ok else "two numbers >= 0, e.g. 1e-30,0.001"


def _one_of(*allowed: Any) -> Rule:
    def rule(value: Any) -> Optional[str]:
        ok = any(value == a and type(value) is type(a) for a in allowed)
        return None if ok else "one of " + ", ".join(map(repr, allowed)).replace("False", "false")
    return rule


_NON_NEGATIVE = _at_least(0)
_POSITIVE = _at_least(0, above=True)
_COUNT = _at_least(0, integer=True)

ADAM_LIKE = {"betas": _betas, "eps": _NON_NEGATIVE, "weight_decay": _NON_NEGATIVE, "amsgrad": _flag}
EIGHT_BIT = {"min_8bit_size": _COUNT, "is_paged": _flag}

OPTIMIZER_ARGS: dict[str, dict[str, Rule]] = {
    "AdamW": {**ADAM_LIKE, "maximize": _flag},
    "AdamW8bit": {**ADAM_LIKE, "amsgrad": _one_of(False), "optim_bits": _one_of(32), **EIGHT_BIT},
    "Lion": {"betas": _betas, "weight_decay": _NON_NEGATIVE},
    "Lion8bit": {"betas": _betas, "weight_decay": _NON_NEGATIVE, **EIGHT_BIT},
    "Prodigy": {"betas": _betas, "beta3": _optional_beta, "eps": _POSITIVE, "weight_decay": _NON_NEGATIVE,
                "decouple": _flag, "use_bias_correction": _flag, "safeguard_warmup": _flag,
                "d0": _POSITIVE, "d_coef": _POSITIVE,
                "growth_rate": _at_least(0, above=True, allow_inf=True), "slice_p": _at_least(1, integer=True)},
    "DAdaptAdam": {"betas": _betas, "eps": _POSITIVE, "weight_decay": _NON_NEGATIVE, "log_every": _COUNT,
                   "decouple": _flag, "use_bias_correction": _flag, "d0": _POSITIVE,
                   "growth_rate": _at_least(0, above=True, allow_inf=True)},
    "SGDNesterov": {"momentum": _NON_NEGATIVE, "dampening": _any_number, "weight_decay": _NON_NEGATIVE,
                    "nesterov": _flag, "maximize": _flag},
    "Adafactor": {"eps": _eps_pair, "clip_threshold": _NON_NEGATIVE, "decay_rate": _any_number,
                  "beta1": _optional_beta, "weight_decay": _NON_NEGATIVE, "scale_parameter": _flag,
                  "relative_step": _flag, "warmup_init": _flag},
}


def _together(name: str, args: dict[str, Any]) -> Optional[str]:
    """Rules between arguments, with the defaults train/optimizers.py gives SGDNesterov and Adafactor."""
    if name == "SGDNesterov" and args.get("nesterov", True):
        if args.get("momentum", 0.9) <= 0 or args.get("dampening", 0) != 0:
            return "SGDNesterov with nesterov=true needs momentum > 0 and dampening 0"
    if name == "Adafactor" and args.get("warmup_init", False) and not args.get("relative_step", False):
        return "Adafactor's warmup_init=true needs relative_step=true"
    return None


def optimizer_args_problem(name: Any, args: Any) -> Optional[str]:
    """Why ``args`` cannot go to optimizer ``name`` (every bad argument named), or None."""
    table = OPTIMIZER_ARGS.get(name) if isinstance(name, str) else None
    if table is None or not isinstance(args, dict):
        return None  # the optimizer key and the mapping's own check report these
    unknown = [key for key in args if key not in table]
    if unknown:
        return (f"{name} has no argument {', '.join(repr(k) for k in unknown)}; "
                f"{name} accepts: {', '.join(table)}")
    bad = []
    for key, value in args.items():
        wanted = table[key](value)
        if wanted:
            bad.append(f"{key} must be {wanted}, got {_short(value)}")
    if bad:
        return f"for {name}, " + "; ".join(bad)
    return _together(name, args)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
