"""Dataset preparation commands: `easytrain tags DIR` and `easytrain images DIR`.

Imported by the CLI at start-up, so only argparse lives here; each handler
imports the tools it needs when it runs.
"""

from __future__ import annotations

import argparse
import builtins
import sys

from easytrain.errors import UserError
from easytrain.invocation import command
from easytrain.textsafe import safe_text

PREVIEW_LINES = 5

TAGS_HELP = """\
Without edit options: a report of the captions (top tags, tags in every caption,
repeated tags, captions over 75/225 tokens, images without captions).
Edits combine in one pass and are a dry run until --apply; every applied change
can be undone with --undo. --tagger writes tags for images without a caption."""

IMAGES_HELP = """\
Without options: a report of the images (formats, small, transparent, animated,
colour modes, unreadable, exact and near duplicates). Fixes are each asked for
by their own option and are a dry run until --apply; nothing is ever deleted
(excluded files move to DIR/_excluded/<reason>/) and --undo puts the last change back."""


def register(subparsers) -> None:
    """Add the preparation subcommands; each sets ``handler`` to a function of the parsed args."""
    p = subparsers.add_parser("tags", help="caption report, tag edits, auto-tagging (undoable)",
                              description=TAGS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", metavar="DIR", help="the image folder above the N_name folders, or one N_name folder")
    p.add_argument("--add-trigger", metavar="TAG", help="put TAG first in every caption (never twice)")
    p.add_argument("--check-trigger", metavar="WORD",
                   help="how CLIP tokenizes WORD and how the captions use it (default: their usual first tag)")
    p.add_argument("--remove", nargs="+", action="extend", metavar="TAG", default=[],
                   help="remove these tags (several, or comma-separated in quotes)")
    p.add_argument("--replace", action="append", metavar="OLD=NEW", default=[], help="rename a tag (repeatable)")
    p.add_argument("--merge", action="append", metavar='"a, b = a"', default=[],
                   help="the tags left of = become the one on the right (repeatable)")
    p.add_argument("--underscores", action="store_true", help="underscores to spaces (kaomoji such as ^_^ kept)")
    p.add_argument("--dedupe", action="store_true", help="drop a tag's later copies in a caption")
    p.add_argument("--keep-tokens", type=int, default=1, metavar="N",
                   help="the first N tags keep their place; --underscores/--dedupe leave them alone (default 1)")
    p.add_argument("--apply", action="store_true", help="write the changes (default: dry run)")
    p.add_argument("--undo", action="store_true", help="put the last applied change in DIR back")
    p.add_argument("--caption-extension", default=".txt", metavar="EXT", help="caption file extension (.txt)")
    p.add_argument("--top", type=int, default=20, metavar="N", help="how many top tags the report lists")
    g = p.add_argument_group("auto-tagging (a WD14-style tagger already on disk)")
    g.add_argument("--tagger", metavar="TAGGER_DIR", help="folder with model.onnx and selected_tags.csv")
    g.add_argument("--general-threshold", type=float, default=0.35, metavar="P", help="default 0.35")
    g.add_argument("--character-threshold", type=float, default=0.85, metavar="P", help="default 0.85")
    g.add_argument("--overwrite", action="store_true", help="tag images that already have a caption too")
    g.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per model call (8)")
    g.add_argument("--cpu", action="store_true", help="run the tagger on the CPU even when CUDA is there")
    p.add_argument("--plain", action="store_true", help="plain progress lines even in a terminal")
    p.set_defaults(handler=run_tags)

    p = subparsers.add_parser("images", help="image report, duplicates, fixes (undoable)",
                              description=IMAGES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", metavar="DIR", help="the image folder above the N_name folders, or one N_name folder")
    p.add_argument("--resolution", type=int, default=None,
                   help="training resolution the sizes are checked against (default: 512, or --answers)")
    p.add_argument("--answers", metavar="FILE", help="take the resolution from this answers file")
    p.add_argument("--threshold", type=int, default=None, metavar="BITS",
                   help="near duplicates: perceptual hashes at most this many bits apart (of 64; default 6)")
    p.add_argument("--flatten", action="store_true", help="lay transparent images onto white (or --background)")
    p.add_argument("--background", default="white", metavar="COLOR", help="colour for --flatten/--pad-square")
    p.add_argument("--convert-animated", nargs="?", const="all", choices=("all", "first"), default=None,
                   help="GIFs and animated WebPs to PNG: every frame (all, the default) or the first only")
    p.add_argument("--pad-square", action="store_true", help="pad each image to a square with white (or --background)")
    p.add_argument("--exclude-duplicates", action="store_true", help="move exact copies out (one stays)")
    p.add_argument("--exclude-near-duplicates", action="store_true", help="move near copies out (the largest stays)")
    p.add_argument("--exclude-unreadable", action="store_true", help="move unreadable files out")
    p.add_argument("--min-size", type=int, default=None, metavar="PX", help="move images whose shorter side is under PX out")
    p.add_argument("--apply", action="store_true", help="carry out the fixes (default: dry run)")
    p.add_argument("--undo", action="store_true", help="put the last applied change in DIR back")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="processes for decoding and hashing")
    p.add_argument("--caption-extension", default=".txt", metavar="EXT", help="caption file extension (.txt)")
    p.add_argument("--plain", action="store_true", help="plain progress lines even in a terminal")
    p.set_defaults(handler=run_images)


def print(*values, **kwargs) -> None:  # noqa: A001 - what these commands print holds captions and file names
    """print() with control characters escaped: a caption's escape sequence must not reach the terminal."""
    builtins.print(*(safe_text(value) for value in values), **kwargs)


def _image_resolution(args) -> tuple[int, str]:
    """The training size the images are measured against, and where it came from (said in the report)."""
    if args.answers and args.resolution is not None:
        raise UserError("--resolution and --answers both give the resolution: use one of them")
    if args.answers:
        from easytrain import answers as answers_file

        resolution = answers_file.load(args.answers, check_paths=False).resolution
        return resolution, f"the resolution in {args.answers}"
    if args.resolution is None:
        from easytrain import questions as Q

        return Q.usual_resolution({}), "the SD1.x default; --resolution N or --answers FILE for your run's size"
    if args.resolution < 64:
        raise UserError(f"--resolution: must be at least 64, got {args.resolution}")
    return args.resolution, "--resolution"


def _print(lines) -> None:
    for line in lines:
        print(line)


def run_undo(folder) -> int:
    from easytrain.tools.caption_edits import undo

    result = undo(folder)
    print(f"Undid {result.description or result.undo_id}: {len(result.restored)} file(s) put back"
          + (f", {len(result.set_aside)} file(s) it had created set aside in the undo folder"
             if result.set_aside else ""))
    _print(f"  conflict: {c}" for c in result.conflicts)
    return 0


def refuse_output_folder(folder) -> None:
    """UserError when ``folder`` is a training run's output folder (LoRA files, loss.png, samples), not a dataset.

    Its loss.png and sample images would otherwise be reported (and edited) as training pictures.
    """
    import json
    import re
    from pathlib import Path

    root = Path(folder).expanduser()
    try:
        names = {p.name for p in root.iterdir()} if root.is_dir() else set()
    except OSError:
        return
    answers = sorted(n for n in names if n.endswith(".answers.json"))
    loras = sorted(n for n in names if n.endswith(".safetensors"))
    signs = loras[:2] + [n for n in ("metrics.csv", "loss.png") if n in names] + answers[:1]
    signs += [n + "/" for n in sorted(names) if n == "sample" or re.fullmatch(r"previous-\d+", n)][:2]
    if not (answers or (loras and ("loss.png" in names or "metrics.csv" in names))):
        return
    hint = "give the image folder above the N_name folders"
    for name in answers:
        try:
            image_folder = json.loads((root / name).read_text(encoding="utf-8")).get("image_folder")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(image_folder, str) and image_folder:
            hint += f"; this run trained on {image_folder} (image_folder in {name})"
            break
    raise UserError(f"{root}: this is a training run's output folder ({', '.join(signs)}), not a dataset: its "
                    f"loss.png and sample images are not training pictures; {hint}")


def run_tags(args) -> int:
    edits_given = bool(args.add_trigger or args.remove or args.replace or args.merge or args.underscores
                       or args.dedupe)
    if args.undo:
        if edits_given or args.apply or args.tagger:
            raise UserError("--undo works alone: run it without edit options, --apply or --tagger")
        return run_undo(args.folder)
    refuse_output_folder(args.folder)
    if args.tagger:
        if edits_given:
            raise UserError("--tagger runs on its own; edit the new captions in a second run "
                            "(e.g. --add-trigger afterwards)")
        return _run_tagger(args)
    if not edits_given:
        if args.apply:
            raise UserError("--apply: there is nothing to apply; name an edit such as --add-trigger TAG")
        if args.top < 1:
            raise UserError(f"--top: must be at least 1, got {args.top}")
        from easytrain.tools.caption_report import caption_report, format_report

        report = caption_report(args.folder, args.caption_extension, top=args.top,
                                keep_tokens=args.keep_tokens)  # a missing folder: says so
        trigger = _trigger_lines(args.folder, args.caption_extension, args.check_trigger, "--check-trigger")
        _print(format_report(report))
        _print(trigger)
        return 0
    return _run_edits(args)


def _trigger_lines(folder, caption_extension: str, trigger, option: str) -> list[str]:
    """The trigger check for ``trigger`` (None: the captions' usual first tag), as report lines."""
    from easytrain.tools.caption_files import load_captions
    from easytrain.tools.trigger_check import check_trigger, likely_trigger

    captions = [caption.tags for caption in load_captions(folder, caption_extension).captions]
    if trigger is None:
        trigger, option = likely_trigger(captions), "trigger"
        if trigger is None:
            return []
    return ["", "Trigger:"] + ["  " + line for line in check_trigger(trigger, captions, key=option).lines()]


def _edits(args):
    from easytrain.tools.tag_ops import TagEdits, check_tag, parse_merge, parse_replace, parse_tag_list

    if args.keep_tokens < 0:
        raise UserError(f"--keep-tokens: must be 0 or more, got {args.keep_tokens}")
    return TagEdits(
        add_trigger=check_tag(args.add_trigger, "--add-trigger") if args.add_trigger is not None else None,
        remove=parse_tag_list(args.remove),
        replace=tuple(parse_replace(v) for v in args.replace),
        merge=tuple(parse_merge(v) for v in args.merge),
        underscores=args.underscores, dedupe=args.dedupe, keep_tokens=args.keep_tokens)


def _run_edits(args) -> int:
    from easytrain.tools.caption_edits import apply, plan_edits
    from easytrain.tools.dataset_files import relative_name

    if args.check_trigger is not None:
        raise UserError("--check-trigger works in the report (without edit options); with --add-trigger "
                        "the check of that trigger is shown anyway")
    edits = _edits(args)
    trigger = _trigger_lines(args.folder, args.caption_extension, edits.add_trigger, "--add-trigger") \
        if edits.add_trigger else []
    plan = plan_edits(args.folder, edits, args.caption_extension)
    print("Edits: " + "; ".join(edits.describe()))
    print(f"{len(plan.changes)} of {plan.captions} caption files change.")
    for change in plan.changes[:PREVIEW_LINES]:
        print(f"  {relative_name(plan.root, change.path)}")
        print(f"    - {change.before}")
        print(f"    + {change.after}")
    if len(plan.changes) > PREVIEW_LINES:
        print(f"  ... and {len(plan.changes) - PREVIEW_LINES} more")
    for message in plan.skipped:
        print(f"  skipped: {message}")
    if plan.without_caption:
        print(f"Note: {plan.without_caption} image(s) have no caption file, so no edit reaches them "
              "(they train on the folder name; --tagger can caption them).")
    if plan.head_underscores:
        print(f"Note: {plan.head_underscores} caption(s) keep underscores in their first {edits.keep_tokens} "
              f"tag(s) (kept as the trigger); use --keep-tokens 0 to change those too.")
    _print(trigger)
    if not args.apply:
        if plan.changes:
            print("Dry run: nothing was written. Add --apply to write these changes.")
        return 0
    undo_id = apply(plan)
    if undo_id is None:
        print("Nothing to write.")
    else:
        print(f"Wrote {len(plan.changes)} caption files (originals kept in "
              f"{plan.root / '.easytrain' / 'undo' / undo_id}). "
              f"Undo with: {command('tags', str(plan.root), '--undo')}")
    return 0


def _run_tagger(args) -> int:
    from easytrain.tools.progress_lines import progress
    from easytrain.tools.tagger import tag_folder

    def started(count: int, style: str, provider: str) -> None:
        print(f"Tagging {count} image(s) without a caption ({provider}; tags written with {style})"
              if not args.overwrite else f"Tagging {count} image(s) ({provider}; tags written with {style})")

    with progress("tagging", plain=True if args.plain else None) as on_progress:
        result = tag_folder(
            args.folder, args.tagger, general_threshold=args.general_threshold,
            character_threshold=args.character_threshold, overwrite=args.overwrite, batch_size=args.batch_size,
            caption_extension=args.caption_extension, use_gpu=not args.cpu, on_progress=on_progress,
            on_start=started)
    for problem in result.problems:
        print(f"  skipped: {problem}", file=sys.stderr)
    print(f"Wrote {len(result.written)} caption file(s); {result.skipped} image(s) already had one"
          + (" (--overwrite tags them too)" if result.skipped and not args.overwrite else "") + ".")
    if result.undo_id:
        print(f"Undo with: {command('tags', args.folder, '--undo')}")
    return 1 if result.problems else 0


def run_images(args) -> int:
    if args.undo:
        if args.apply:
            raise UserError("--undo works alone: run it without fixes or --apply")
        return run_undo(args.folder)
    refuse_output_folder(args.folder)
    from easytrain.tools.image_fixes import FixOptions, apply_fixes, describe_plan, parse_colour, plan_fixes
    from easytrain.tools.image_report import DEFAULT_THRESHOLD, format_report, image_report
    from easytrain.tools.progress_lines import progress

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    if not 0 <= threshold <= 64:
        raise UserError(f"--threshold: must be from 0 to 64 bits, got {threshold}")
    resolution, source = _image_resolution(args)
    if args.min_size is not None and args.min_size < 1:
        raise UserError(f"--min-size: must be at least 1 pixel, got {args.min_size}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers: must be at least 1, got {args.workers}")
    options = FixOptions(
        flatten=args.flatten, background=parse_colour(args.background), convert_animated=args.convert_animated,
        pad_square=args.pad_square, exclude_duplicates=args.exclude_duplicates,
        exclude_near_duplicates=args.exclude_near_duplicates, exclude_unreadable=args.exclude_unreadable,
        min_size=args.min_size)
    if args.apply and options.empty:
        raise UserError("--apply: there is nothing to apply; name a fix such as --flatten or --exclude-duplicates")

    with progress("reading images", plain=True if args.plain else None) as on_progress:
        report = image_report(args.folder, resolution=resolution, threshold=threshold, workers=args.workers,
                              caption_extension=args.caption_extension, on_progress=on_progress)
    print(f"Sizes checked against {resolution} px training ({source}).")
    _print(format_report(report))
    if options.empty:
        return 0
    plan = plan_fixes(report, options)
    print("")
    if plan.empty:
        print("Nothing to fix for the options given.")
        return 0
    _print(describe_plan(plan))
    if not args.apply:
        print("Dry run: nothing was changed. Add --apply to carry these out.")
        return 0
    undo_id = apply_fixes(plan)
    print(f"Done; originals are in {report.root / '.easytrain' / 'undo' / undo_id}. "
          f"Undo with: {command('images', str(report.root), '--undo')}")
    return 0
