#!/usr/bin/env python3
"""easytrain's launcher: sets up .venv on first run, then runs easytrain in it.

    python wizard.py                  the wizard
    python wizard.py demo             train the demo on the embedded tiny model
    python wizard.py train FILE       train from an answers file (works over SSH)
    python wizard.py test             install the test tools and run the test suite

The first run creates `.venv` next to this file and installs easytrain into it
(an NVIDIA machine gets PyTorch's CUDA build, a machine without one the CPU
build). Later runs start at once; the install is redone only when
pyproject.toml changes. Only the standard library is used here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
MARKER = VENV / ".easytrain-install"
INSTALL_LOG = VENV / "easytrain-install.log"
LAUNCHER_VARIABLE = "EASYTRAIN_LAUNCHER"  # read by easytrain/invocation.py to print commands that run as typed
MIN_PYTHON = (3, 10)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def say(message: str) -> None:
    print(f"[easytrain setup] {message}", flush=True)


def has_nvidia_gpu() -> bool:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return False
    try:
        return subprocess.run([exe, "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def local_torch_wheel_version() -> str | None:
    """A torch wheel in pip's find-links folders (some machines ship one on disk)."""
    folders = os.environ.get("PIP_FIND_LINKS", "").split()
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                             text=True, timeout=30).stdout
        for line in out.splitlines():
            if "find-links" in line and "=" in line:
                folders += line.split("=", 1)[1].strip().strip("'\"").split()
    except (OSError, subprocess.SubprocessError):
        pass
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for folder in folders:
        path = Path(folder.replace("file://", ""))
        if path.is_dir():
            for wheel in sorted(path.glob(f"torch-*-{tag}-*.whl")):
                return wheel.name.split("-")[1].split("+")[0]
    return None


def torch_requirement() -> tuple[list[str], str]:
    """(pip arguments for torch, a sentence saying why)."""
    override = os.environ.get("EASYTRAIN_TORCH")
    if override:
        return [override], f"using EASYTRAIN_TORCH={override}"
    if has_nvidia_gpu():
        if os.name == "nt":
            return (["torch>=2.4", "--extra-index-url", "https://download.pytorch.org/whl/cu128"],
                    "NVIDIA GPU found: installing PyTorch with CUDA")
        return ["torch>=2.4"], "NVIDIA GPU found: installing PyTorch with CUDA"
    local = local_torch_wheel_version()
    if local:
        return [f"torch=={local}"], f"no NVIDIA GPU: using the PyTorch {local} CPU wheel on this machine"
    return ["torch>=2.4"], "no NVIDIA GPU found: installing PyTorch (training will run on the CPU)"


def install_fingerprint(extras: str) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    return f"{digest}:{extras}"


def installed_extras() -> set[str]:
    if not MARKER.is_file() or not venv_python().exists():
        return set()
    digest = install_fingerprint("").split(":")[0]
    text = MARKER.read_text().strip()
    if not text.startswith(digest + ":"):
        return set()
    return {"base"} | {e for e in text.split(":", 1)[1].split(",") if e}


def ensure_venv(extras: set[str]) -> None:
    have = installed_extras()
    if "base" in have and extras <= have:
        return
    if sys.version_info < MIN_PYTHON:
        sys.exit(f"easytrain needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer; this is {sys.version.split()[0]}")
    if not venv_python().exists():
        say(f"creating a virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    torch_args, why = torch_requirement()
    say(why)
    wanted = sorted((extras | have) - {"base"})
    target = f"{ROOT}[{','.join(wanted)}]" if wanted else str(ROOT)
    say(f"installing easytrain and its libraries (a few minutes the first time; log: {INSTALL_LOG})")
    command = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check",
               "-e", target, *torch_args]
    if not run_logged(command, INSTALL_LOG):
        sys.exit(f"easytrain setup: pip failed; the full log is {INSTALL_LOG} (its last lines say why). "
                 "Fix the cause and run the same command again")
    MARKER.write_text(install_fingerprint(",".join(wanted)) + "\n")
    say("done")
    check_torch_sees_gpu()


def check_torch_sees_gpu() -> bool:
    """On an NVIDIA machine, whether the installed torch can use the GPU; if not, say why and the fix.

    A CPU wheel, or a CUDA wheel newer than the driver, sees no GPU and would train on the CPU without a word.
    easytrain/train/device_checks.py words the fix (the wheel to install, or the driver version needed).
    """
    if not has_nvidia_gpu():
        return True
    try:
        done = subprocess.run([str(venv_python()), "-m", "easytrain.train.device_checks"], capture_output=True,
                              text=True, timeout=300)
    except (OSError, subprocess.SubprocessError):
        return True
    if done.returncode == 0 or not done.stdout.strip():   # fine, or the check itself failed: training will say
        return True
    say("WARNING: " + done.stdout.strip())
    return False


PLAIN_EVERY = 5.0  # seconds between progress lines when the output is not a terminal (a log, CI, a pipe)
PLAIN_ALWAYS = ("Installing collected packages", "Successfully installed")  # said whatever the interval


def run_logged(command: list[str], log_path: Path) -> bool:
    """Run ``command`` with all its output in ``log_path``; a terminal sees one line that updates.

    Without a terminal (a log file, CI, `| tee`) pip's own step lines are printed as lines, at most one
    every PLAIN_EVERY seconds, so a first install never sits a minute in silence.
    On failure the log's last lines are shown too, so the reason is on screen as well.
    """
    import time

    live = sys.stdout.isatty()
    width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
    last_plain = None
    with open(log_path, "w", encoding="utf-8", errors="replace") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   errors="replace")
        for line in process.stdout:
            log.write(line)
            if not line.strip() or line.startswith(" "):
                continue
            if live:
                print("\r" + f"  {line.strip()}"[:width].ljust(width), end="", flush=True)
                continue
            now = time.monotonic()
            if last_plain is None or now - last_plain >= PLAIN_EVERY or line.startswith(PLAIN_ALWAYS):
                print(f"  {line.strip()}"[:200], flush=True)
                last_plain = now
        ok = process.wait() == 0
    if live:
        print("\r" + " " * width + "\r", end="", flush=True)
    if not ok:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        print("\n".join("  " + line for line in tail), file=sys.stderr)
    return ok


def run_in_venv(args: list[str]) -> int:
    os.environ.setdefault(LAUNCHER_VARIABLE, json.dumps([sys.executable, str(ROOT / "wizard.py")]))
    command = [str(venv_python()), *args]
    if os.name != "nt":
        # Replace this process so Ctrl+C, SIGTERM and SIGHUP reach the trainer directly.
        os.execv(command[0], command)
    return subprocess.call(command)


def main(argv: list[str]) -> int:
    if argv[:1] == ["test"]:
        ensure_venv({"test"})
        return run_in_venv(["-m", "pytest", *argv[1:]])
    ensure_venv(set())
    return run_in_venv(["-m", "easytrain", *argv])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
