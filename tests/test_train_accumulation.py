"""Gradient accumulation counts: optimizer steps per epoch, window ends, the effective batch."""

from easytrain.train.accumulation import effective_batch, optimizer_steps, window_ends


def test_counts_as_kohya():
    assert optimizer_steps(10, 1) == 10
    assert optimizer_steps(10, 4) == 3                       # 4 + 4 + a short window of 2
    assert [i for i in range(10) if window_ends(i, 10, 4)] == [3, 7, 9]
    assert [i for i in range(3) if window_ends(i, 3, 1)] == [0, 1, 2]
    assert effective_batch(2, 4) == 8 and effective_batch(2, 4, processes=2) == 16
