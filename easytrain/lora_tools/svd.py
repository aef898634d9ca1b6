"""Low-rank factoring by SVD, and kohya's rules for choosing a rank (networks/resize_lora.py).

- fixed: the rank asked for;
- sv_ratio r: keep singular values above the largest / r;
- sv_fro f: the fewest that keep the fraction f of the Frobenius norm;
- sv_cumulative c: the fewest whose sum is the fraction c of the sum of all.
As kohya's, a dynamic rank is at least 1, below the count of singular values,
and never above the fixed rank given with it; a zero matrix gets rank 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIN_SV = 1e-6
RULES = ("sv_ratio", "sv_fro", "sv_cumulative")


def _kept_by_ratio(s: torch.Tensor, target: float) -> int:
    """How many singular values exceed the largest / target."""
    return int(torch.sum(s > s[0] / target).item())


def _kept_by_fro(s: torch.Tensor, target: float) -> int:
    """The fewest leading values whose squares reach target**2 of the squared Frobenius norm."""
    share = torch.cumsum(s.pow(2), dim=0) / float(torch.sum(s.pow(2)))
    return int(torch.searchsorted(share, target ** 2)) + 1


def _kept_by_cumulative(s: torch.Tensor, target: float) -> int:
    """The fewest leading values whose sum reaches ``target`` of the sum of all."""
    share = torch.cumsum(s, dim=0) / float(torch.sum(s))
    return int(torch.searchsorted(share, target)) + 1


_KEPT = {"sv_ratio": _kept_by_ratio, "sv_fro": _kept_by_fro, "sv_cumulative": _kept_by_cumulative}


def choose_rank(s: torch.Tensor, rank: int, rule: str | None = None, param: float | None = None) -> int:
    """The new rank for singular values ``s`` (descending), as kohya's rank_resize chooses it."""
    if rule is None:
        new_rank = rank
    else:
        new_rank = max(1, min(_KEPT[rule](s, float(param)), len(s)))
    if float(s[0]) <= MIN_SV:  # a zero matrix
        return 1
    return min(new_rank, rank)


@dataclass
class Factors:
    up: torch.Tensor        # (out, rank): U @ diag(S), as kohya's
    down: torch.Tensor      # (rank, in)
    rank: int
    kept: float             # fraction of the Frobenius norm kept


def factor(matrix: torch.Tensor, rank: int, rule: str | None = None, param: float | None = None) -> Factors:
    """The best rank-``rank`` (or rule-chosen) factors of a 2-D fp32 ``matrix``."""
    u, s, vh = torch.linalg.svd(matrix.to(torch.float32), full_matrices=False)
    new_rank = max(1, min(choose_rank(s, rank, rule, param), len(s)))
    total = float(s.pow(2).sum().sqrt())
    kept = float(s[:new_rank].pow(2).sum().sqrt()) / total if total > 0 else 1.0
    return Factors(u[:, :new_rank] @ torch.diag(s[:new_rank]), vh[:new_rank], new_rank, kept)
