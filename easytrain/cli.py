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

DESCRIPTION = """\
Train LoRAs for Stable Diffusion checkpoints.

With no command, the wizard asks its questions and saves an answers file;
`easytrain train FILE` trains from such a file (also over SSH, without the wizard).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="easytrain", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"easytrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sub.add_parser("wizard", help="open the question wizard (the default with no command)")

    p = sub.add_parser("check", help="validate an answers file and print the training plan")
    p.add_argument("file", help="answers file (.json; popup-era and kohya_ss GUI files and kohya .toml configs work too)")

    p = sub.add_parser("train", help="train from one or more answers files")
    p.add_argument("files", nargs="+", metavar="FILE", help="answers files, run in the given order")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="STATE",
                   help="continue from the newest saved state in the output folder (or from STATE)")
    p.add_argument("--plain", action="store_true", help="plain progress lines even in a terminal")

    p = sub.add_parser("queue", help="train every answers file in a folder, in name order")
    p.add_argument("folder")
    p.add_argument("--plain", action="store_true", help="plain progress lines even in a terminal")

    p = sub.add_parser("demo", help="train the demo answers on the embedded tiny model (CPU is fine)")
    p.add_argument("--plain", action="store_true", help="plain progress lines even in a terminal")

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
            return run_train(args.files, resume=args.resume, plain=args.plain)
        if command == "queue":
            from easytrain.commands.train import run_queue
            return run_queue(args.folder, plain=args.plain)
        if command == "demo":
            from easytrain.commands.train import run_demo
            return run_demo(plain=args.plain)
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


if __name__ == "__main__":
    raise SystemExit(main())
