"""Balancing regularization images to the training count, as kohya does (stdlib only)."""

from __future__ import annotations

from typing import Sequence


def balanced_reg_repeats(train_images_per_epoch: int, reg_repeats: Sequence[int]) -> list[int]:
    """How often each regularization image appears per epoch.

    kohya's DreamBoothDataset: walk the regularization images in order, first
    with their folder's repeats, then adding one repeat per image per round,
    until their total reaches the training images per epoch (repeats
    included). Images the walk never reaches get 0 (more reg images than
    needed: some are unused).
    """
    result = [0] * len(reg_repeats)
    if not reg_repeats or sum(reg_repeats) == 0:
        return result
    total = 0
    first_round = True
    while total < train_images_per_epoch:
        for index, repeats in enumerate(reg_repeats):
            added = repeats if first_round else 1
            result[index] += added
            total += added
            if total >= train_images_per_epoch:
                break
        first_round = False
    return result
