import re
import subprocess
import sys

from rich.console import Console

from easytrain.progress import PlainView, RichView, make_view
from easytrain.train import events as ev

from tests._progress_helpers import FakeClock, FakeTerminal, run_started, step


def _recording_console() -> Console:
    return Console(record=True, width=80, force_terminal=True, color_system="standard")


def _feed_training(view, clock: FakeClock, steps: int = 120) -> None:
    view(run_started())
    view(ev.PhaseStarted("loading model"))
    view(ev.PhaseEnded("loading model", 2.5))
    for i in range(1, steps + 1):
        clock.now += 0.5
        view(step(i, peak=8 * 2**30))
        if i % 50 == 0:
            view(ev.EpochEnded(i // 50, i, 0.15))
            view(ev.CheckpointSaved(f"/out/run/mylora-{i // 50:06d}.safetensors", i // 50, i))
            view(ev.SampleSaved(f"/out/run/sample/mylora_e{i // 50:06d}_00.png", i // 50, "a cat"))


def test_rich_view_shows_the_numbers_of_a_run():
    console, clock = _recording_console(), FakeClock()
    view = RichView(console, clock=clock)
    _feed_training(view, clock)
    view(ev.PhaseStarted("caching latents", 412))
    view(ev.PhaseProgress("caching latents", 120, 412))
    console.print(view.panel)
    text = console.export_text()

    assert "120/200" in text and "60%" in text
    assert "caching latents" in text and "120/412" in text and "29%" in text
    assert "epoch   3/4" in text
    assert f"{0.2 - 120 * 0.0005:.4f}" in text                      # current loss 0.1400
    assert "unet 5.00e-04" in text and "text_encoder 1.00e-04" in text
    assert "2.00 it/s" in text and "4.0 img/s" in text
    # 80 steps left at 0.5 s per step of wall clock.
    assert "ETA 0:00:40" in text and "elapsed 0:01:00" in text
    assert "peak GPU 8.00 GiB" in text
    assert "/out/run/mylora-000002.safetensors" in text
    assert "/out/run/sample/mylora_e000002_00.png" in text
    assert re.search("[▁▂▃▄▅▆▇█]{10,}", text), "loss sparkline missing"
    # Rare events are printed as lines above the live area.
    assert "epoch 2/4 done at step 100, average loss 0.1500" in text
    assert "loading model done in 2.5 s" in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_rich_view_averages_and_phase_without_total():
    console, clock = _recording_console(), FakeClock()
    view = RichView(console, clock=clock)
    view(run_started(total_steps=100, epochs=2))
    for i in range(1, 4):
        view(step(i, loss=[0.3, 0.1, 0.2][i - 1], seconds=2.0))
    view(ev.PhaseStarted("sampling"))
    clock.now += 5
    console.print(view.panel)
    text = console.export_text()
    assert "avg 0.1993" in text and "epoch avg" not in text  # epoch 1 holds every step: one average
    assert "2.00 s/it" in text                 # slower than 1 it/s reads as seconds per step
    assert re.search(r"sampling .* 0:00:05", text)


def test_rich_view_prints_messages_literally_above_the_live_area():
    console = _recording_console()
    with RichView(console) as view:
        view(run_started())
        view(ev.Message("8-bit AdamW needs bitsandbytes [bold]; using AdamW", level="warning"))
        view(step(1))
        view(ev.RunFinished(step=200, seconds=61.0, final_path="/out/run/mylora.safetensors",
                            average_loss=0.125))
    text = console.export_text()
    assert "warning: 8-bit AdamW needs bitsandbytes [bold]; using AdamW" in text
    assert "finished" not in text              # the summary after the view says it, once
    assert "1/200" in text                     # the final frame stays on screen


def _plain_run(every: int, total: int = 23):
    out, clock = FakeTerminal(), FakeClock()   # even on a terminal the plain view writes no escapes
    view = PlainView(out, every=every, clock=clock)
    with view:
        view(run_started(total_steps=total, epochs=1))
        view(ev.Message("using AdamW instead of AdamW8bit", level="warning"))
        for i in range(1, total + 1):
            clock.now += 1.0
            view(step(i, steps_per_epoch=total))
        view(ev.EpochEnded(1, total, 0.19))
        view(ev.CheckpointSaved("/out/run/mylora.safetensors", 1, total))
        view(ev.RunFinished(step=total, seconds=23.0, final_path="/out/run/mylora.safetensors",
                            average_loss=0.19))
    return out.getvalue()


def test_plain_view_prints_every_n_steps_and_each_event_without_escape_codes():
    text = _plain_run(every=5)
    assert "\x1b" not in text
    lines = text.splitlines()
    step_lines = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in step_lines] == ["1/23", "5/23", "10/23", "15/23", "20/23", "23/23"]
    assert len(lines) == len(step_lines) + 5      # run started, message, estimate, epoch, checkpoint (no finished:
    #                                                the summary after the view says it)
    assert lines[0].startswith("training mylora on cuda:0")
    assert lines[1] == "warning: using AdamW instead of AdamW8bit"
    assert "lr unet=5.00e-04 text_encoder=1.00e-04" in step_lines[0]
    assert "eta 0:00:08" in step_lines[3]                 # step 15: 8 left at 1 s of wall clock each
    assert lines[-1] == "saved epoch 1 (step 23): /out/run/mylora.safetensors"


def test_plain_view_interval_is_a_parameter():
    step_lines = [line for line in _plain_run(every=10).splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in step_lines] == ["1/23", "10/23", "20/23", "23/23"]


def test_plain_view_prints_the_last_step_of_a_stopped_run_and_thins_phase_progress():
    out = FakeTerminal()
    view = PlainView(out, every=10)
    view(ev.PhaseStarted("caching latents", 412))
    for done in range(1, 413):
        view(ev.PhaseProgress("caching latents", done, 412))
    view(ev.PhaseEnded("caching latents", 4.0))
    view(run_started(total_steps=100))
    for i in range(1, 8):
        view(step(i))
    view(ev.RunStopped(step=7, reason="Ctrl+C", saved_path="/out/run/mylora-state", state_path="/s"))
    lines = out.getvalue().splitlines()
    phase_lines = [line for line in lines if line.startswith("caching latents ")]
    assert phase_lines[0] == "caching latents 0/412..."
    assert phase_lines[-1] == "caching latents done in 4.0 s"
    assert "caching latents 412/412" in phase_lines and len(phase_lines) == 12
    assert [line.split()[1] for line in lines if line.startswith("step ")] == ["1/100", "7/100"]
    assert lines[-1] == "stopped at step 7: Ctrl+C; saved /out/run/mylora-state"


def test_rich_view_shows_the_epoch_average_once_it_covers_fewer_steps_than_the_running_one():
    console, clock = _recording_console(), FakeClock()
    view = RichView(console, clock=clock)
    view(run_started(total_steps=100, epochs=2))
    for i in range(1, 53):
        view(step(i, loss=0.3 if i <= 50 else 0.1))
    console.print(view.panel)
    assert "epoch avg 0.1000" in console.export_text()


def test_plain_view_reports_a_save_inside_an_epoch_after_its_step_line():
    out = FakeTerminal()
    view = PlainView(out, every=10)
    view(run_started(total_steps=200))
    for i in range(1, 47):
        view(step(i, steps_per_epoch=40))
    view(ev.CheckpointSaved("/out/run/mylora-step00000046.safetensors", 2, 46, "/s", epoch_finished=False))
    view(ev.RunStopped(step=46, reason="Ctrl+C", saved_path="/out/run/mylora-step00000046.safetensors"))
    lines = out.getvalue().splitlines()
    assert lines[-3].startswith("step 46/200 | epoch 2/4")
    assert lines[-2] == ("saved at step 46 (epoch 2 in progress): /out/run/mylora-step00000046.safetensors "
                         "(state: /s)")
    view(ev.CheckpointSaved("/out/run/mylora-000002.safetensors", 2, 80))
    assert out.getvalue().splitlines()[-1] == "saved epoch 2 (step 80): /out/run/mylora-000002.safetensors"


def test_plain_view_strips_control_characters_from_event_text():
    out = FakeTerminal()
    PlainView(out)(ev.Message("bad \x1b[31mred\x1b[0m name"))
    assert "\x1b" not in out.getvalue() and "red" in out.getvalue()


def test_make_view_picks_by_terminal():
    import io
    assert isinstance(make_view(io.StringIO()), PlainView)
    assert isinstance(make_view(FakeTerminal()), RichView)
    assert isinstance(make_view(FakeTerminal(), plain=True), PlainView)
    assert isinstance(make_view(io.StringIO(), plain=False), RichView)
    assert make_view(io.StringIO(), every=3).every == 3


def test_make_view_rich_on_a_terminal_stream_draws_the_panel():
    out = FakeTerminal()
    with make_view(out) as view:
        view(run_started())
        view(step(1))
    assert "easytrain" in out.getvalue() and "1/200" in out.getvalue()


def test_progress_imports_no_heavy_modules():
    code = ("import sys, easytrain.progress; "
            "print(sorted(m for m in ('torch', 'diffusers', 'peft', 'textual') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_run_started_line_uses_singular_forms():
    out = FakeTerminal()
    view = PlainView(out)
    view(ev.RunStarted(name="one", total_steps=1, epochs=1, steps_per_epoch=1, batch_size=1, num_images=1,
                       device="cpu", output_dir="/out"))
    assert out.getvalue().startswith("training one on cpu: 1 step (1 epoch x 1 step, batch 1,")
