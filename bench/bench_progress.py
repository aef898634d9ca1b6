"""Per-event cost of the progress sinks (run by hand: .venv/bin/python bench/bench_progress.py)."""

import io
import os
import time
import tempfile

from rich.console import Console

from easytrain.progress import MetricsWriter, PlainView, RichView, fan_out
from easytrain.train import events as ev

N = 200_000


def run(sink, label):
    sink(ev.RunStarted(name="bench", total_steps=N, epochs=10, steps_per_epoch=N // 10, batch_size=2,
                       num_images=N // 5, device="cpu", output_dir="/tmp"))
    steps = [ev.StepEnded(step=i, epoch=(i - 1) // (N // 10) + 1, loss=0.1 + (i % 7) * 0.01,
                          lrs=(1e-4, 5e-5), seconds=0.001, images=2) for i in range(1, N + 1)]
    start = time.perf_counter()
    for event in steps:
        sink(event)
    return f"{label:28s} {(time.perf_counter() - start) / N * 1e6:6.2f} us/step"


if __name__ == "__main__":
    with open(os.devnull, "w") as devnull:
        with RichView(Console(file=devnull, force_terminal=True, width=80)) as view:
            line = run(view, "rich view (live, 4 fps)")
    print(line)    # after the live view ends: it redirects stdout while running
    print(run(PlainView(io.StringIO(), every=10), "plain view (every 10)"))
    with tempfile.TemporaryDirectory() as folder:
        metrics = MetricsWriter(folder, "bench")
        print(run(metrics, "metrics writer"))
        start = time.perf_counter()
        metrics(ev.RunFinished(step=N, seconds=1.0, final_path="x", average_loss=0.1))
        print(f"{'close + loss.png':28s} {time.perf_counter() - start:6.2f} s")
        with open(os.devnull, "w") as devnull:
            with RichView(Console(file=devnull, force_terminal=True, width=80)) as view:
                line = run(fan_out(view, MetricsWriter(folder, "bench")), "fan_out(rich, metrics)")
        print(line)
