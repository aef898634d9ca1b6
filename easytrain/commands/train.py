"""`easytrain train`, `queue` and `demo`: load answers, plan, train with a live view."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from easytrain import answers as answers_file
from easytrain.errors import UserError
from easytrain.invocation import command
from easytrain.textsafe import safe_line, safe_text
from easytrain.plan import TrainPlan

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_ANSWERS = REPO_ROOT / "answers" / "demo.json"


@dataclass
class JobResult:
    file: str
    ok: bool
    seconds: float
    output: str = ""
    error: str = ""
    exit_code: int = 0


EXIT_STOPPED = 3  # stopped on request, state saved: `--resume` continues
EXIT_FAILED = 2   # a job failed: a mistake in its answers, or an error inside easytrain (as for one file)


def free_job_memory() -> None:
    """Free what the job just ended held, before the next one loads its model.

    A finished run's models, optimizer and accelerator are garbage only in reference cycles (accelerate wraps
    each prepared model's forward in a method bound to the model; a failed job's traceback holds its frames),
    which nothing collects until the cyclic collector happens to run: on a GPU the previous model would stay
    there while the next loads. Collect them now and give the cached blocks back to the driver.
    """
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def resume_command(path: str) -> str:
    return command("train", path, "--resume")


def is_main_process() -> bool:
    """True unless this is a non-main process of a distributed launch (torchrun, accelerate, MPI)."""
    import os

    for variable in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if os.environ.get(variable, "").strip().isdigit():
            return int(os.environ[variable]) == 0
    return True


def _quiet_sink(event) -> None:
    """The progress view of a non-main process: it says nothing (the main process shows the run)."""


def printable_events(view):
    """``view`` fed events whose text (paths, captions in messages) has its control characters escaped."""
    import dataclasses

    def send(event) -> None:
        changes = {f.name: safe_line(value) for f in dataclasses.fields(event)
                   if isinstance(value := getattr(event, f.name), str) and value != safe_line(value)}
        view(dataclasses.replace(event, **changes) if changes else event)
    return send


class SavedFiles:
    """A sink that remembers the files saved (for the summary) and the last one (when a later save fails)."""

    def __init__(self) -> None:
        self.last: Optional[str] = None
        self.checkpoints: list[str] = []      # the epoch and step files, in the order they were saved
        self.samples: list[str] = []
        self.start_step = 0                   # > 0 when this session resumed a run

    def __call__(self, event) -> None:
        kind = type(event).__name__
        path = getattr(event, "path", None)
        if kind == "CheckpointSaved" and path:
            self.last = path
            self.checkpoints.append(path)
        elif kind == "SampleSaved" and path:
            self.samples.append(path)
        elif kind == "RunStarted":
            self.start_step = event.start_step

    def summary_files(self) -> list[str]:
        """The saved files for the summary: each epoch and step file, and the sample folder as one line."""
        from easytrain.wording import plural

        files = list(self.checkpoints)
        folders: dict[str, int] = {}
        for sample in self.samples:
            folders[str(Path(sample).parent)] = folders.get(str(Path(sample).parent), 0) + 1
        files += [f"{folder}/ ({plural(count, 'sample image')})" for folder, count in folders.items()]
        return files

    def disk_refused(self, exc: BaseException, resume_hint: Optional[str], restart_hint: str = "",
                     ) -> Optional[UserError]:
        """A UserError naming the file that was saved and the one the disk refused, or None.

        ``resume_hint`` is None when no state was saved to continue from: ``restart_hint`` starts again."""
        from easytrain.fsutil import failed_save

        found = failed_save(exc)
        if found is None:
            return None
        target, error = found
        last = self.last
        if target.endswith("-state"):  # the state is written after its LoRA file, which is complete
            lora = Path(target[: -len("-state")] + ".safetensors")
            last = str(lora) if lora.is_file() else last
        kept = (f"{last} was saved and stays, with the files before it" if last
                else "no LoRA file had been saved yet; earlier files are untouched")
        then = (f"`{resume_hint}` continues from the newest saved state" if resume_hint
                else f"`{restart_hint}` starts the run again (no training state was saved to continue from)")
        return UserError(f"{target}: could not be saved ({error.strerror or error}); {kept}. Free some "
                         f"space, then {then}")


def prepare(path: str) -> tuple[answers_file.Answers, TrainPlan]:
    """The answers and the plan, checked as `check` checks them: nothing here needs the model."""
    from easytrain.commands.preflight import run_preflight

    answers = answers_file.load(path)
    plan = TrainPlan.from_answers(answers)
    run_preflight(plan)
    return answers, plan


def train_one(path: str, *, resume: Optional[str] = None, plain: bool = False) -> JobResult:
    """Validate, plan and train one answers file, holding its output's run lock. UserErrors propagate."""
    answers, plan = prepare(path)
    if not is_main_process():  # the main process holds the lock for all
        return _train_planned(path, answers, plan, resume=resume, plain=plain)
    from easytrain.commands.queue_lock import run_lock

    with run_lock(plan.saving.output_dir, plan.saving.output_name) as notes:
        for note in notes:
            print(f"easytrain: {note}", flush=True)
        return _train_planned(path, answers, plan, resume=resume, plain=plain)


def _train_planned(path: str, answers: answers_file.Answers, plan: TrainPlan, *, resume: Optional[str],
                   plain: bool) -> JobResult:
    from easytrain.model.early_conversion import converting

    with converting(plan):  # the base model's weights converted on an idle core while the libraries import
        return _train_converting(path, answers, plan, resume=resume, plain=plain)


def _train_converting(path: str, answers: answers_file.Answers, plan: TrainPlan, *, resume: Optional[str],
                      plain: bool) -> JobResult:
    from easytrain.commands.check import plan_lines

    main = is_main_process()
    if main:  # before the heavy imports, which take seconds: the person sees at once that it started
        from easytrain.wording import terminal_width, wrap_lines

        print("\n".join(wrap_lines(plan_lines(plan), terminal_width(sys.stdout))), flush=True)
        for line in keep_earlier_outputs(plan, path, resume):
            print(line, flush=True)
        print("starting: loading PyTorch and diffusers...", flush=True)
    from contextlib import nullcontext

    from easytrain.commands.library_log import library_log, library_log_path
    from easytrain.commands.stop_signals import stop_on_signals
    from easytrain.model.quiet import quiet_model_libraries
    from easytrain.progress import MetricsWriter, fan_out, make_view, summary_lines
    from easytrain.train import events as ev
    from easytrain.train.control import TrainControl
    from easytrain.train.loop import run_training

    quiet_model_libraries()
    log_path = library_log_path(plan.saving.output_dir, plan.saving.output_name)
    control = TrainControl()
    started = time.monotonic()
    metrics = MetricsWriter(plan.saving.output_dir, plan.saving.output_name) if main else None
    every = answers.get("log_every_n_steps", 10)
    board = tensorboard_sink(plan, every) if main else None
    view_context = (make_view(sys.stdout, plain=True if plain else None, every=every)
                    if main else nullcontext(_quiet_sink))
    saved = SavedFiles()
    try:
        with view_context as view, stop_on_signals(control, say=getattr(view, "note", None)), \
                (library_log(log_path) if main else nullcontext()):
            sinks = [sink for sink in (printable_events(view), metrics, board, saved) if sink is not None]
            result = run_training(plan, fan_out(*sinks), control, resume=resume)
    except Exception as exc:
        refused = saved.disk_refused(exc, resume_command(path) if can_resume(plan) else None, command("train", path))
        if refused is None:
            raise
        raise refused from None
    finally:
        for sink in (metrics, board):
            if sink is not None:
                sink.close()
    if main:
        from easytrain.commands.check import usual_trigger

        extra = ((*saved.summary_files(), metrics.csv_path, metrics.png_path)
                 + ((board.folder,) if board is not None else ()) + ((log_path,) if log_path.is_file() else ()))
        from easytrain import catalog

        lines = summary_lines(result.outcome, extra_files=extra, resume_command=resume_command(path),
                              start_step=saved.start_step, trigger=usual_trigger(plan),
                              webui=catalog.architecture(plan.model.architecture).webui)
        try:
            print("\n".join(lines), flush=True)
        except OSError:  # the terminal is gone (SIGHUP after an SSH drop); the files are saved all the same
            pass
    stopped = isinstance(result.outcome, ev.RunStopped)
    return JobResult(path, not stopped, time.monotonic() - started, str(result.final_path),
                     error="stopped" if stopped else "", exit_code=EXIT_STOPPED if stopped else 0)


def can_resume(plan: TrainPlan) -> bool:
    """Whether the output folder holds a state of this run that `--resume` can continue."""
    from easytrain.commands.preflight import find_earlier_outputs

    try:
        return find_earlier_outputs(plan.saving.output_dir, plan.saving.output_name, plan.total_steps).state is not None
    except OSError:  # the folder cannot be read now: do not promise a state
        return False


def tensorboard_sink(plan: TrainPlan, every: int):
    """The TensorBoard event writer for this run, or None when the answers turn it off."""
    from easytrain.progress.tensorboard import TensorBoardWriter, tensorboard_installed

    if not plan.run.tensorboard:
        return None
    if not tensorboard_installed():
        print("easytrain: the tensorboard package is not installed, so no TensorBoard logs are written "
              "(pip install tensorboard, or set tensorboard: false)", file=sys.stderr, flush=True)
        return None
    return TensorBoardWriter(plan.saving.output_dir, plan.saving.output_name, every=every)


def keep_earlier_outputs(plan: TrainPlan, path: str, resume: Optional[str]) -> list[str]:
    """Clean an interrupted save's temp files; move an earlier run's files aside (not when resuming)."""
    from easytrain.commands import preflight

    preflight.clean_leftovers(plan.saving.output_dir, plan.saving.output_name)
    earlier = preflight.find_earlier_outputs(plan.saving.output_dir, plan.saving.output_name, plan.total_steps)
    if resume is not None:
        preflight.refuse_resuming_a_finished_run(earlier, plan.saving.output_name, resume, command("train", path))
    moved_to = None
    if resume is None and earlier.worth_keeping:
        moved_to = preflight.back_up_earlier_outputs(earlier)
    lines = preflight.earlier_outputs_lines(earlier, path, moving=moved_to, resuming=resume is not None)
    if moved_to is not None:
        from easytrain.commands.previous import pile_up_line

        lines += [f"  {line}" for line in filter(None, [pile_up_line(plan.saving.output_dir)])]
    return lines


def run_train(files: Sequence[str], *, resume: Optional[str] = None, plain: bool = False) -> int:
    if resume not in (None, "latest"):
        _check_state_folder(resume)
    if len(files) == 1:
        return train_one(files[0], resume=resume, plain=plain).exit_code
    if resume:
        raise UserError("--resume works with one answers file at a time")
    return run_jobs(list(files), plain=plain)


def _check_state_folder(given: str) -> None:
    """``--resume STATE`` names a folder that can be read (before any model loads)."""
    try:
        usable = Path(given).expanduser().is_dir()
    except (OSError, ValueError) as exc:
        raise UserError(f"--resume: cannot use this path ({getattr(exc, 'strerror', None) or exc}): "
                        f"{safe_line(given)[:200]}") from None
    if not usable:
        raise UserError(f"--resume: {safe_line(given)[:200]} is not a folder; give a state folder such as "
                        "output/NAME-000004-state, or --resume alone for the newest")


def _claim_job(path: Path) -> Optional[str]:
    """Why the job is not for this runner (it is gone, or another runner has it); None once it is ours."""
    from easytrain.commands.queue_lock import claim

    holder = claim(path)
    if holder:
        return f"claimed by {holder}"
    if not path.is_file():
        _release_job(path)
        return "the file is gone: another runner took it"
    return None


def _release_job(path: Path) -> None:
    from easytrain.commands.queue_lock import release

    release(path)


def run_jobs(files: list[str], *, plain: bool, done_folder: Optional[Path] = None, claims: bool = False) -> int:
    """Run several answers files in order; a failing one is reported and skipped, the rest go on.

    A stopped job (Ctrl+C, SIGTERM) stops the whole queue: the remaining jobs
    are listed as not run. Finished files move into ``done_folder`` if given. With ``claims``
    (a queue folder) each job is claimed before it starts and skipped when another runner has it.
    Returns 0 when every job finished, EXIT_STOPPED after a stop, EXIT_FAILED (2, as for one file) otherwise.
    """
    results: list[JobResult] = []
    stopped = False
    for index, path in enumerate(files, 1):
        free_job_memory()   # the previous job's model, before this one loads
        if stopped:
            results.append(JobResult(path, False, 0.0, error="not run (the queue was stopped)", exit_code=-1))
            continue
        if claims:
            holder = _claim_job(Path(path))
            if holder:
                results.append(JobResult(path, False, 0.0, error=f"not run ({holder})", exit_code=-1))
                continue
        if is_main_process():
            print(f"\n=== job {index}/{len(files)}: {path}", flush=True)
        started = time.monotonic()
        try:
            result = train_one(path, plain=plain)
        except UserError as exc:
            print(f"easytrain: job {index} ({Path(path).name}) failed: {safe_text(exc)}", file=sys.stderr, flush=True)
            results.append(JobResult(path, False, time.monotonic() - started, error=_first_line(exc),
                                     exit_code=EXIT_FAILED))
            if claims:
                _release_job(Path(path))
            continue
        except Exception as exc:  # a bug or a library error in one job must not cost the others
            from easytrain.crash import unexpected_line

            print(f"easytrain: job {index} ({Path(path).name}) failed: {unexpected_line(exc, path)}; "
                  "going on with the next job", file=sys.stderr, flush=True)
            results.append(JobResult(path, False, time.monotonic() - started,
                                     error=f"{type(exc).__name__}: {_first_line(exc)}", exit_code=EXIT_FAILED))
            if claims:
                _release_job(Path(path))
            continue
        results.append(result)
        if result.exit_code == EXIT_STOPPED:
            stopped = True
        elif done_folder is not None and is_main_process():
            done_folder.mkdir(exist_ok=True)
            Path(path).replace(done_folder / Path(path).name)
        if claims:
            _release_job(Path(path))   # after the move: the job is never up for grabs between the two
    free_job_memory()
    if is_main_process():
        print("\n" + "\n".join(summary_table(results, moved_to=done_folder)), flush=True)
    if stopped:
        return EXIT_STOPPED
    return 0 if all(r.ok for r in results) else EXIT_FAILED


def summary_table(results: Sequence[JobResult], *, moved_to: Optional[Path] = None) -> list[str]:
    """The queue's closing table: job, result, time, output (or what went wrong)."""
    rows = []
    for r in results:
        if r.ok:
            outcome = "done"
        elif r.error == "stopped":
            outcome = "stopped"
        elif r.exit_code == -1:
            outcome = "not run"
        else:
            outcome = "FAILED"
        seconds = f"{r.seconds:.1f}s" if r.seconds else "-"
        rows.append((Path(r.file).name, outcome, seconds, r.output if r.ok or r.error == "stopped" else r.error))
    header = ("job", "result", "time", "output")
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i]) for i in range(3)]
    lines = ["queue summary:"]
    for row in (header, *rows):
        lines.append("  " + "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])
    done = sum(1 for r in results if r.ok)
    tail = f"{done} of {len(results)} jobs finished"
    if moved_to is not None and done:
        tail += f"; their answers files moved to {moved_to}"
    lines.append(tail)
    return lines


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_queue(folder: str, *, plain: bool = False) -> int:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"{root}: queue folder not found")
    files = sorted(str(p) for p in root.glob("*.json") if p.is_file())
    if not files:
        raise UserError(f"{root}: no answers files (*.json) in this folder")
    if not is_main_process():  # the main process holds the lock and claims the jobs for all
        return run_jobs(files, plain=plain, done_folder=root / "complete")
    from easytrain.commands.queue_lock import queue_lock

    with queue_lock(root) as notes:
        for note in notes:
            print(f"easytrain: {note}", flush=True)
        return run_jobs(files, plain=plain, done_folder=root / "complete", claims=True)


def run_demo(*, plain: bool = False, output: Optional[str] = None) -> int:
    """Train answers/demo.json; ``output`` (or $EASYTRAIN_DEMO_OUTPUT) moves its files out of output/demo."""
    import os

    from easytrain.cli import DEMO_OUTPUT_VARIABLE
    from easytrain.demo import DEMO_ESTIMATE, demo_answers_in, ensure_demo_dataset
    from easytrain.wording import plural

    if ensure_demo_dataset(DEMO_ANSWERS.parent / "demo" / "images"):
        print("made the demo dataset in answers/demo/images")
    answers_path = DEMO_ANSWERS
    output = output or os.environ.get(DEMO_OUTPUT_VARIABLE, "").strip() or None
    if output:
        answers_path = demo_answers_in(DEMO_ANSWERS, Path(output))  # the plan's first line names it
    plan = TrainPlan.from_answers(answers_file.load(answers_path))
    width, height = plan.resolution
    print(f"The demo trains {plural(plan.total_steps, 'step')} at {width}x{height} on the embedded tiny model: "
          f"{DEMO_ESTIMATE}.", flush=True)
    return run_train([str(answers_path)], plain=plain)
