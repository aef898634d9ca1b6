"""The `easytrain tags DIR` report: what the captions hold, counted once, printed plainly."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from easytrain.tools.caption_files import load_captions
from easytrain.tools.dataset_files import relative_name, resolve_root
from easytrain.tools.tag_ops import repeated_tags
from easytrain.tools.token_count import count_tokens
from easytrain.wording import plural

TOKEN_LIMITS = (75, 225)  # one CLIP chunk; the longest max_token_length


@dataclass(frozen=True)
class FolderTags:
    folder: Path
    images: int
    captions: int
    top: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class CaptionReport:
    root: Path
    images: int
    captions: int
    without_caption: tuple[Path, ...]
    not_utf8: tuple[str, ...]
    top: tuple[tuple[str, int], ...]
    distinct_tags: int
    folders: tuple[FolderTags, ...]
    in_every_caption: tuple[str, ...]  # tags every caption file has (candidates to prune into the trigger)
    kept_in_front: tuple[str, ...]  # of those, the ones among a caption's first keep-tokens tags (the trigger)
    repeated: tuple[tuple[Path, tuple[str, ...]], ...]  # caption files with a tag twice
    too_long: dict[int, tuple[tuple[Path, int], ...]]  # limit -> (caption file, tokens)
    tokens_exact: bool
    token_note: str


def caption_report(folder, caption_extension: str = ".txt", top: int = 20, per_folder_top: int = 10,
                   keep_tokens: int = 1) -> CaptionReport:
    """``keep_tokens``: the first tags of each caption are kept (the trigger), never suggested for removal."""
    root = resolve_root(folder)
    dataset = load_captions(root, caption_extension)
    overall: Counter = Counter()
    folder_counts: dict[Path, Counter] = {f.path: Counter() for f in dataset.folders}
    folder_captions: Counter = Counter()
    repeated, every, head = [], None, set()
    captions = dataset.captions
    for item in dataset.images:
        if item.caption is None:
            continue
        tags = item.caption.tags
        unique = set(tags)
        overall.update(unique)
        folder_counts[item.folder].update(unique)
        folder_captions[item.folder] += 1
        every = unique if every is None else every & unique
        head.update(tags[:max(0, keep_tokens)])
        twice = repeated_tags(tags)
        if twice:
            repeated.append((item.caption.path, tuple(twice)))

    tokens = count_tokens([c.first_line for c in captions])
    too_long = {limit: tuple((c.path, n) for c, n in zip(captions, tokens.counts) if n > limit)
                for limit in TOKEN_LIMITS}
    in_every = tuple(sorted(every or (), key=lambda t: (-overall[t], t)))
    kept = tuple(t for t in in_every if t in head)
    in_every = tuple(t for t in in_every if t not in head)
    folders = tuple(
        FolderTags(f.path, len(f.images), folder_captions[f.path], _top(folder_counts[f.path], per_folder_top))
        for f in dataset.folders)
    return CaptionReport(
        root=root, images=len(dataset.images), captions=len(captions) + len(dataset.not_utf8),
        without_caption=tuple(dataset.without_caption), not_utf8=dataset.not_utf8,
        top=_top(overall, top), distinct_tags=len(overall), folders=folders, in_every_caption=in_every,
        kept_in_front=kept,
        repeated=tuple(repeated), too_long=too_long, tokens_exact=tokens.exact, token_note=tokens.note)


def _top(counts: Counter, n: int) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n])


def format_report(report: CaptionReport, listed: int = 5) -> list[str]:
    """The report as plain lines; each list of files shows `listed` paths and a count of the rest."""
    name = lambda p: relative_name(report.root, p)  # noqa: E731
    lines = [f"Captions in {report.root}",
             f"  {plural(report.images, 'image')}, {plural(report.captions, 'caption file')}, "
             f"{plural(len(report.without_caption), 'image')} without a caption, "
             f"{plural(report.distinct_tags, 'different tag')}"]
    if report.without_caption:
        lines.append("  Without a caption (they train on the folder name; `--tagger` can write them):")
        lines += _paths([name(p) for p in report.without_caption], listed)
    if report.not_utf8:
        lines.append("  Not UTF-8 (left untouched by every edit):")
        lines += _paths(report.not_utf8, listed)
    if report.top:
        lines.append("")
        lines.append("Top tags (in how many captions):")
        lines += [f"  {count:6d}  {tag}" for tag, count in report.top]
    if len(report.folders) > 1:
        for folder in report.folders:
            lines.append("")
            lines.append(f"{name(folder.folder)}: {plural(folder.images, 'image')}, {plural(folder.captions, 'caption')}")
            lines += [f"  {count:6d}  {tag}" for tag, count in folder.top]
    lines.append("")
    kept = (f" (besides {', '.join(report.kept_in_front)}, kept in front by --keep-tokens)"
            if report.kept_in_front else "")
    if report.in_every_caption:
        lines.append(f"In every caption{kept}: " + ", ".join(report.in_every_caption))
        lines.append("  For a character these usually describe the character itself; removing them "
                     "lets the trigger tag learn them (--remove ...).")
    else:
        lines.append(f"No other tag is in every caption{kept}." if kept else "No tag is in every caption.")
    if report.repeated:
        lines.append(f"Captions with the same tag twice ({len(report.repeated)}; --dedupe fixes them):")
        lines += _paths([f"{name(p)}: {', '.join(tags)}" for p, tags in report.repeated], listed)
    for limit in TOKEN_LIMITS:
        long_ones = report.too_long[limit]
        if not long_ones:
            lines.append(f"No caption is longer than {limit} tokens.")
            continue
        what = ("more than one 75-token chunk; fine with max token length 150 or 225" if limit == 75
                else "cut off even at the longest max token length (225)")
        lines.append(f"Longer than {limit} tokens ({len(long_ones)}; {what}):")
        lines += _paths([f"{name(p)}: {n} tokens" for p, n in long_ones], listed)
    if not report.tokens_exact:
        lines.append(f"Note: {report.token_note}.")
    return lines


def _paths(items: list[str], listed: int) -> list[str]:
    lines = [f"    {item}" for item in items[:listed]]
    if len(items) > listed:
        lines.append(f"    ... and {len(items) - listed} more")
    return lines
