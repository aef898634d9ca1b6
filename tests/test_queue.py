"""`easytrain queue DIR` and `easytrain train A B C`: a broken job is reported and skipped, the rest run."""

from __future__ import annotations

import json

from _robust_helpers import write_answers
from easytrain.cli import main as cli_main
from easytrain.commands.train import JobResult, summary_table


def test_a_queue_runs_around_a_broken_job_and_sums_up(tmp_path, capsys):
    queue = tmp_path / "queue"
    short = dict(epochs=1, save_every_n_epochs=0)
    write_answers(queue, "01_first.json", output_folder="out1", output_name="first", **short)
    # training fails: the loss diverges at once (TrainingFailed)
    write_answers(queue, "02_diverges.json", output_folder="out2", output_name="diverges", unet_lr=1e12,
                  max_grad_norm=0.0, **short)
    # validation fails: a typo in a key and a bad value
    (queue / "03_invalid.json").write_text(json.dumps({"schema_version": 1, "network_dimm": 4, "batch_size": 0}))
    write_answers(queue, "04_last.json", output_folder="out4", output_name="last", **short)
    (queue / "notes.txt").write_text("not an answers file")

    code = cli_main(["queue", str(queue), "--plain"])
    out, err = capsys.readouterr()
    assert code == 2
    assert (queue / "out1" / "first.safetensors").is_file() and (queue / "out4" / "last.safetensors").is_file()
    assert not (queue / "out2" / "diverges.safetensors").exists()
    assert sorted(p.name for p in (queue / "complete").iterdir()) == ["01_first.json", "04_last.json"]
    assert sorted(p.name for p in queue.glob("*.json")) == ["02_diverges.json", "03_invalid.json"]
    assert "job 2 (02_diverges.json) failed" in err and "loss became" in err
    assert "job 3 (03_invalid.json) failed" in err and "network_dimm" in err

    table = out[out.index("queue summary:"):].splitlines()
    assert table[1].split() == ["job", "result", "time", "output"]
    rows = {line.split()[0]: line for line in table[2:6]}
    assert rows["01_first.json"].split()[1] == "done" and "first.safetensors" in rows["01_first.json"]
    assert rows["02_diverges.json"].split()[1] == "FAILED" and "loss became" in rows["02_diverges.json"]
    assert rows["03_invalid.json"].split()[1] == "FAILED"
    assert rows["04_last.json"].split()[1] == "done"
    assert "2 of 4 jobs finished" in table[6]
    # the jobs ran in name order
    assert out.index("job 1/4: ") < out.index("job 2/4: ") < out.index("job 4/4: ")


def test_train_with_several_files_runs_them_in_the_given_order_without_moving_them(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    missing = tmp_path / "missing.json"
    code = cli_main(["train", str(bad), str(missing)])
    out, err = capsys.readouterr()
    assert code == 2 and bad.exists()
    assert "job 1 (bad.json) failed" in err and "job 2 (missing.json) failed" in err
    assert "0 of 2 jobs finished" in out


def test_the_summary_table_lines_up_and_marks_a_stopped_queue():
    rows = summary_table([
        JobResult("/q/a.json", True, 12.34, "/out/a.safetensors"),
        JobResult("/q/long_name_b.json", False, 3.0, "/out/b-step00000007.safetensors", error="stopped",
                  exit_code=3),
        JobResult("/q/c.json", False, 0.0, error="not run (the queue was stopped)", exit_code=-1),
    ])
    assert rows[1].index("result") == rows[2].index("done") == rows[3].index("stopped") == rows[4].index("not run")
    assert "12.3s" in rows[2] and "b-step00000007" in rows[3] and rows[-1] == "1 of 3 jobs finished"


# ---- one queue per folder; each job claimed before it starts ---------------------------------------

import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from easytrain.commands.queue_lock import LOCK_NAME, claim, claim_path, queue_lock, release  # noqa: E402


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def owner(pid: int) -> str:
    return json.dumps({"pid": pid, "host": socket.gethostname(), "since": "earlier"})


def test_a_second_queue_on_a_running_folder_says_who_holds_it(tmp_path, capsys):
    (tmp_path / "01_a.json").write_text("{}")
    (tmp_path / LOCK_NAME).write_text(owner(os.getpid()))
    assert cli_main(["queue", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"another easytrain queue is running this folder (pid {os.getpid()} on {socket.gethostname()}" in err
    assert (tmp_path / "01_a.json").is_file() and (tmp_path / LOCK_NAME).is_file()   # nothing touched


def test_a_stale_lock_is_taken_over_and_the_lock_is_gone_after_the_queue(tmp_path, capsys):
    (tmp_path / "01_invalid.json").write_text(json.dumps({"schema_version": 1, "batch_size": 0}))
    (tmp_path / LOCK_NAME).write_text(owner(dead_pid()))
    assert cli_main(["queue", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "a stale queue lock (pid" in out and "was taken over" in out
    assert "job 1 (01_invalid.json) failed" in err
    assert not (tmp_path / LOCK_NAME).exists() and not claim_path(tmp_path / "01_invalid.json").exists()


def test_a_claimed_job_is_never_started_twice(tmp_path, capsys):
    job = tmp_path / "01_job.json"
    job.write_text(json.dumps({"schema_version": 1, "batch_size": 0}))
    claim_path(job).write_text(owner(os.getpid()))       # another runner has it (this live process)
    assert claim(job) is not None
    assert cli_main(["queue", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "job 1" not in err and "not run (claimed by pid" in out
    claim_path(job).write_text(owner(dead_pid()))         # that runner died: its claim is stale
    assert claim(job) is None and claim(job) is not None   # exclusive: the second claim fails
    release(job)
    assert not claim_path(job).exists()
    with queue_lock(tmp_path) as notes:
        assert notes == [] and (tmp_path / LOCK_NAME).is_file()
    assert not (tmp_path / LOCK_NAME).exists()
