"""On the CPU a run keeps freed memory for the next step (train/host_memory.py): no page faults to refill it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# Eight 8 MiB blocks allocated, written and freed three times; the page faults of the third round.
ROUNDS = textwrap.dedent("""
    import resource, sys, torch
    from easytrain.train.host_memory import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    def round_():
        blocks = [torch.ones(2 << 20) for _ in range(8)]   # 8 x 8 MiB, every page written
        del blocks
    round_(); round_()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    round_()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _third_round_faults(mode: str) -> int:
    # Both start from glibc's default threshold, held fixed: left to itself glibc raises it as mmapped
    # blocks are freed, and then whether freed heap blocks are reused or trimmed depends on where other
    # allocations landed (the usual round faulted 2048 of its 16384 pages in one CI run, most of them in others).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 << 10)}
    done = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_are_reused_without_faulting_them_in_again():
    usual, kept = _third_round_faults("usual"), _third_round_faults("keep")
    pages = 8 * (8 << 20) // 4096
    assert usual > pages // 2, f"glibc gave the memory back and faulted it in again: {usual} faults"
    assert kept <= pages // 4, f"{kept} page faults with the memory kept (usual: {usual})"


def test_a_cpu_run_keeps_freed_memory(tmp_path, monkeypatch):
    from _train_helpers import Recorder, tiny_plan
    from easytrain.train import host_memory
    from easytrain.train.loop import run_training

    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(True) or True)
    run_training(tiny_plan(tmp_path, epochs=1), Recorder())
    assert calls == [True]
