"""The `easytrain` command. Thin: parses arguments, imports each command lazily.

Heavy modules (torch, diffusers, peft) are imported only inside the commands
that train, so `easytrain --help`, `check`, `questions` and the wizard start fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from easytrain import __version__
from easytrain.errors import UserError
from easytrain.textsafe import safe_text

DEMO_OUTPUT_VARIABLE = "EASYTRAIN_DEMO_OUTPUT"  # the demo's output folder instead of output/demo (tests use it)

def description() -> str:
    """The --help text, with commands in the form that runs as typed (easytrain/invocation.py)."""
    from easytrain.invocation import command

    return ("Train LoRAs for Stable Diffusion checkpoints.\n\n"
            "With no command, the wizard asks its questions and saves an answers file;\n"
            f"`{command('train', 'FILE')}` trains from such a file (also over SSH, without the wizard).\n")


def build_parser() -> argparse.ArgumentParser:
    from easytrain.invocation import prefix, quote

    parser = argparse.ArgumentParser(prog=" ".join(quote(word) for word in prefix()), description=description(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"easytrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("wizard", help="open the question wizard (the default with no command)")

    p = sub.add_parser("check", help="validate an answers file and print the training plan")
    p.add_argument("file", help="answers file (.json; popup-era and kohya_ss GUI files and kohya .toml configs work too)")

    p = sub.add_parser("train", help="train from one or more answers files")
    p.add_argument("files", nargs="*", metavar="FILE", help="answers files, run in the given order")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="STATE",
                   help="continue from the newest saved state in the output folder (or from STATE, a "
                        "NAME-000004-state folder); `train --resume FILE` works too")
    p.add_argument("--plain", action="store_true", help="plain progress lines even in a terminal")
    p.set_defaults(usage_error=p.error)  # FILE is checked after --resume has given back a file it took

    p = sub.add_parser("queue", help="train every answers file in a folder, in name order")
    p.add_argument("folder")
    p.add_argument("--plain", action="store_true", help="plain progress lines even in a terminal")

    p = sub.add_parser("demo", help="train the demo answers on the embedded tiny model (CPU is fine)")
    p.add_argument("--plain", action="store_true", help="plain progress lines even in a terminal")
    p.add_argument("--output", metavar="DIR", default=None,
                   help=f"where the demo's files go (default: output/demo in easytrain's folder, "
                        f"or ${DEMO_OUTPUT_VARIABLE})")

    p = sub.add_parser("previous", help="list an output folder's previous-N folders (earlier runs moved aside) "
                                        "and remove the oldest")
    p.add_argument("folder", metavar="OUTPUT_FOLDER", help="the run's output folder")
    p.add_argument("--keep", type=int, default=None, metavar="N",
                   help="remove all but the newest N previous-N folders (a dry run until --apply)")
    p.add_argument("--apply", action="store_true", help="really remove them (default: only say what would go)")

    p = sub.add_parser("compare", help="compare a run's saved files: losses, sizes and a grid of their samples")
    p.add_argument("folder", metavar="OUTPUT_FOLDER", help="the run's output folder")
    p.add_argument("--name", help="the run's output name, when the folder holds several runs")

    p = sub.add_parser("questions", help="list the wizard's questions, defaults and conditions")
    p.add_argument("--markdown", action="store_true", help="as a Markdown table (for the README)")

    p = sub.add_parser("schema", help="print the JSON Schema of the answers file")
    p.add_argument("--write", metavar="PATH", help="write it to PATH instead")

    from easytrain.commands.prep import register  # dataset preparation: tags, images

    register(sub)
    from easytrain.lora_tools.commands import register as register_lora  # LoRA file tools

    register_lora(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "wizard"
    try:
        handler = getattr(args, "handler", None)
        if handler is not None:
            return handler(args)
        if command == "check":
            from easytrain.commands.check import run_check
            return run_check(args.file)
        if command == "compare":
            from easytrain.commands.compare import run_compare
            return run_compare(args.folder, args.name)
        if command == "questions":
            from easytrain.commands.listing import run_questions
            return run_questions(markdown=args.markdown)
        if command == "schema":
            from easytrain.commands.listing import run_schema
            return run_schema(args.write)
        if command == "train":
            from easytrain.commands.train import run_train
            files, resume = train_files(args.files, args.resume)
            if not files:
                args.usage_error("the following arguments are required: FILE")
            return run_train(files, resume=resume, plain=args.plain)
        if command == "queue":
            from easytrain.commands.train import run_queue
            return run_queue(args.folder, plain=args.plain)
        if command == "demo":
            from easytrain.commands.train import run_demo
            return run_demo(plain=args.plain, output=args.output)
        if command == "previous":
            from easytrain.commands.previous import run_previous
            return run_previous(args.folder, keep=args.keep, apply=args.apply)
        if command == "wizard":
            from easytrain.commands.wizard import run_wizard
            return run_wizard()
    except UserError as exc:
        print(f"easytrain: {safe_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("easytrain: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except Exception as exc:  # a bug or a library's failure: one line, the traceback in a file
        from easytrain.crash import debugging, unexpected_line

        if debugging():
            raise
        print(f"easytrain: {unexpected_line(exc, command)}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {command!r}")
    return 2


def train_files(files: Sequence[str], resume: Optional[str]) -> tuple[list[str], Optional[str]]:
    """`train --resume FILE` reads as `train FILE --resume`: an answers file after --resume is not a state.

    argparse gives the word after ``--resume`` to the flag; a state is a folder, so a file (or a name
    ending in .json or .toml) there is the answers file, and the run resumes from its newest state.
    """
    files = list(files)
    if resume not in (None, "latest") and _looks_like_answers(resume):
        return [resume, *files], "latest"
    return files, resume


def _looks_like_answers(word: str) -> bool:
    from pathlib import Path

    try:
        path = Path(word).expanduser()
        return path.suffix.lower() in (".json", ".toml") or path.is_file()
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    raise SystemExit(main())
