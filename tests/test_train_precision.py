"""Mixed precision on the CPU: bf16 trains, fp16 falls back to fp32 with a message."""

from __future__ import annotations

from _train_helpers import Recorder, tiny_plan

from easytrain.train import events as ev
from easytrain.train.loop import run_training


def test_bf16_trains_on_the_cpu(tmp_path):
    events = Recorder()
    result = run_training(tiny_plan(tmp_path, mixed_precision="bf16", epochs=1), events)
    assert isinstance(result.outcome, ev.RunFinished) and result.final_path.is_file()
    assert all(e.loss == e.loss for e in events.of(ev.StepEnded))
