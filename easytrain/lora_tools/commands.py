"""`easytrain lora info|resize|merge|extract|convert`: argparse only; each handler imports its tool when run."""

from __future__ import annotations

import argparse


from easytrain.errors import UserError

LORA_HELP = """\
Tools for LoRA files in kohya's format (easytrain's, kohya's, LyCORIS's; SD1, SD2, SDXL).
Each writes a new file given with -o/--output and never overwrites its inputs."""

MERGE_HELP = """\
Two kinds of merge, told apart by the first file:
  easytrain lora merge BASE.safetensors LORA[:WEIGHT]... -o MERGED.safetensors
      bakes the LoRAs into the checkpoint (same layout, streamed tensor by tensor);
  easytrain lora merge LORA[:WEIGHT] LORA[:WEIGHT]... --rank R -o ONE.safetensors
      sums the LoRAs' changes and factors them again by SVD at rank R."""

PRECISIONS = ("fp16", "bf16", "float")


def _add_rank_rules(p: argparse.ArgumentParser, *, rank_required: bool) -> None:
    p.add_argument("--rank", type=int, required=rank_required, metavar="N",
                   help="the new rank (with a --sv-* rule: the largest rank allowed)")
    p.add_argument("--conv-rank", type=int, metavar="N", help="rank of convs larger than 1x1 (default: --rank)")
    rules = p.add_mutually_exclusive_group()
    rules.add_argument("--sv-ratio", type=float, metavar="R",
                       help="dynamic rank: keep singular values above the largest / R (kohya's sv_ratio)")
    rules.add_argument("--sv-fro", type=float, metavar="F",
                       help="dynamic rank: keep the fraction F of each module's Frobenius norm (sv_fro)")
    rules.add_argument("--sv-cumulative", type=float, metavar="C",
                       help="dynamic rank: keep the fraction C of the sum of singular values (sv_cumulative)")


def register(subparsers) -> None:
    top = subparsers.add_parser("lora", help="LoRA file tools: info, resize, merge, extract, convert",
                                description=LORA_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="lora_command", metavar="TOOL")
    top.set_defaults(handler=lambda args: _usage(top))

    p = sub.add_parser("info", help="architecture, network, dims, training settings, tags, hashes")
    p.add_argument("file", metavar="LORA")
    p.set_defaults(handler=run_info)

    p = sub.add_parser("resize", help="lower the rank by SVD, keeping the strength (kohya's resize_lora)")
    p.add_argument("file", metavar="LORA")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    _add_rank_rules(p, rank_required=False)
    p.add_argument("--precision", choices=PRECISIONS, help="save precision (default: the input's)")
    p.add_argument("--verbose", action="store_true", help="one line per module: rank and norm kept")
    p.add_argument("--plain", action="store_true", help="plain progress lines even in a terminal")
    p.set_defaults(handler=run_resize)

    p = sub.add_parser("merge", help="LoRAs into a checkpoint, or several LoRAs into one",
                       description=MERGE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE[:WEIGHT]")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    _add_rank_rules(p, rank_required=False)
    p.add_argument("--precision", choices=PRECISIONS,
                   help="save precision (default: the checkpoint's own, or the first LoRA's)")
    p.add_argument("--plain", action="store_true", help="plain progress lines even in a terminal")
    p.set_defaults(handler=run_merge)

    p = sub.add_parser("extract", help="a LoRA from a fine-tuned checkpoint and its base, by SVD")
    p.add_argument("base", metavar="BASE")
    p.add_argument("tuned", metavar="TUNED")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    _add_rank_rules(p, rank_required=True)
    p.add_argument("--convs", action="store_true", help="also the resnet convs and samplers (LoCon)")
    p.add_argument("--min-diff", type=float, default=0.01, metavar="D",
                   help="a text encoder that differs nowhere by more than D is left out (default 0.01, kohya's)")
    p.add_argument("--clamp-quantile", type=float, metavar="Q",
                   help="clamp the factors at this quantile, as kohya's 0.99 (default: off, exact)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="save precision (default fp16)")
    p.add_argument("--plain", action="store_true", help="plain progress lines even in a terminal")
    p.set_defaults(handler=run_extract)

    p = sub.add_parser("convert", help="kohya format <-> diffusers/peft format, both ways, lossless")
    p.add_argument("file", metavar="LORA")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.set_defaults(handler=run_convert)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _rule(args) -> tuple[str | None, float | None]:
    for rule in ("sv_ratio", "sv_fro", "sv_cumulative"):
        value = getattr(args, rule)
        if value is not None:
            if value <= 0:
                raise UserError(f"--{rule.replace('_', '-')} must be above 0")
            return rule, value
    return None, None


def _rank(args, rule: str | None) -> int:
    if args.rank is None:
        if rule is None:
            raise UserError("give the new rank with --rank N (or a dynamic rule such as --sv-fro 0.9)")
        return 1 << 30  # a rule without a cap
    return args.rank


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _kept(what: str, mean: float, worst: float, worst_module: str) -> str:
    return f"{what}: mean {_percent(mean)}, worst {_percent(worst)} ({worst_module})"


def _progress(label: str, args):
    from easytrain.tools.progress_lines import progress

    return progress(label, plain=True if getattr(args, "plain", False) else None)


def run_info(args) -> int:
    from easytrain.lora_tools.inspect import inspect_lora, render

    for line in render(inspect_lora(args.file)):
        print(line)
    return 0


def run_resize(args) -> int:
    from easytrain.lora_tools.resize import resize_lora

    rule, param = _rule(args)
    with _progress("resizing", args) as on_progress:
        report = resize_lora(args.file, args.output, rank=_rank(args, rule), conv_rank=args.conv_rank, rule=rule,
                             param=param, precision=args.precision, on_progress=on_progress)
    if args.verbose:
        for m in report.modules:
            print(f"  {m.name:<90} rank {m.old_rank:>3} -> {m.new_rank:<3} kept {_percent(m.kept)}")
    ranks = sorted({m.new_rank for m in report.modules})
    shown = str(ranks[0]) if len(ranks) == 1 else f"{ranks[0]}-{ranks[-1]}"
    old = sorted({m.old_rank for m in report.modules}, reverse=True)
    print(f"Resized {len(report.modules)} modules from rank {'/'.join(map(str, old))} to {shown}.")
    print(_kept("Frobenius norm kept", report.mean_kept, report.worst.kept, report.worst.name))
    print(f"Wrote {report.output}")
    return 0


def run_merge(args) -> int:
    from easytrain.lora_tools.files import LoraFile  # noqa: F401  (torch is loaded from here on)
    from easytrain.lora_tools.merge import merge_into_checkpoint, merge_loras, parse_weighted

    first, *rest = args.files
    if _is_lora(first):
        specs = [parse_weighted(s) for s in args.files]
        rule, param = _rule(args)
        with _progress("merging", args) as on_progress:
            report = merge_loras(specs, args.output, rank=_rank(args, rule), conv_rank=args.conv_rank, rule=rule,
                                 param=param, precision=args.precision, on_progress=on_progress)
        print(f"Merged {len(specs)} LoRAs into {report.modules} modules.")
        print(_kept("Frobenius norm kept", report.mean_kept, report.worst_kept, report.worst_module))
        print(f"Wrote {report.output}")
        return 0
    if not rest:
        raise UserError("give the LoRAs to merge into the checkpoint after it: BASE LORA[:WEIGHT]...")
    if args.rank is not None or args.conv_rank is not None or _rule(args)[0] is not None:
        raise UserError("--rank and the --sv-* rules are for merging LoRAs into one; a merge into a checkpoint "
                        "adds the full changes")
    specs = [parse_weighted(s) for s in rest]
    with _progress("writing", args) as on_progress:
        report = merge_into_checkpoint(first, specs, args.output, precision=args.precision, on_progress=on_progress)
    for item in report.inputs:
        print(f"  {item.label} x {item.weight:g}: {len(item.lora.modules)} modules ({item.lora.network_type})")
    print(f"Merged into {report.base.path.name} ({report.base.description}): {report.tensors_changed} of "
          f"{report.tensors} tensors changed.")
    print(f"Wrote {report.output}")
    return 0


def _is_lora(spec: str) -> bool:
    from pathlib import Path

    from easytrain.lora_tools.merge import parse_weighted
    from easytrain.model.detect import read_safetensors_header

    path = Path(parse_weighted(spec)[0]).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix.lower() != ".safetensors":
        raise UserError(f"{path}: must be a .safetensors file")
    return any(k.startswith(("lora_", "lycoris_")) for k in read_safetensors_header(path).tensors)


def run_extract(args) -> int:
    from easytrain.lora_tools.extract import extract_lora

    rule, param = _rule(args)
    conv_rank = (args.conv_rank or args.rank) if args.convs else None
    if args.conv_rank is not None and not args.convs:
        raise UserError("--conv-rank needs --convs (the resnet convs are extracted only when asked)")
    with _progress("extracting", args) as on_progress:
        report = extract_lora(args.base, args.tuned, args.output, rank=args.rank, conv_rank=conv_rank, rule=rule,
                              param=param, min_diff=args.min_diff, clamp_quantile=args.clamp_quantile,
                              precision=args.precision, on_progress=on_progress)
    for part in report.skipped_parts:
        print(f"  {part}: no weight differs by more than {args.min_diff:g}; left out (not trained)")
    print(f"Extracted {report.modules} modules.")
    print(_kept("Frobenius norm of the differences kept", report.mean_kept, report.worst_kept, report.worst_module))
    print(f"Wrote {report.output}")
    return 0


def run_convert(args) -> int:
    from easytrain.lora_tools.convert import convert

    report = convert(args.file, args.output)
    print(f"Converted {report.modules} modules ({report.direction}).")
    print(f"Wrote {report.output}")
    return 0


