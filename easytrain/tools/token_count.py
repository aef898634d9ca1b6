"""CLIP token counts of captions, with the real tokenizer shipped in easytrain/model/configs.

The pipeline is the one transformers' CLIPTokenizer builds (NFC, whitespace
folded, lower case, CLIP's split pattern, byte-level BPE with `</w>` word
ends), made straight from vocab.json and merges.txt with the `tokenizers`
library: loading torch or transformers would cost seconds a report does not have.
Without those files or the library, an estimate is counted instead and the
result says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "model" / "configs" / "clip_tokenizer"
UNK_TOKEN = "<|endoftext|>"
CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_CHUNKS = re.compile(r"[ \t\n\r\f\v]+")  # ASCII whitespace: a split point for every tokenizer
_ESTIMATE_SPLIT = re.compile(r"[^\W\d_]+|\d|[^\w\s]+|_+")


@dataclass(frozen=True)
class TokenCounts:
    counts: tuple[int, ...]  # per caption, without the start and end tokens
    exact: bool  # False: estimated (the real tokenizer was not available)
    note: str = ""


def count_tokens(captions: list[str], tokenizer_dir: Path = TOKENIZER_DIR) -> TokenCounts:
    tokenizer, note = _load(tokenizer_dir)
    if tokenizer is None:
        return TokenCounts(tuple(_estimate(c) for c in captions), False, note)
    # CLIP never merges across whitespace, so a caption's count is the sum over its
    # space-separated chunks; captions share most chunks, each is encoded once.
    chunked = [_CHUNKS.split(caption) for caption in captions]
    unique = sorted({chunk for chunks in chunked for chunk in chunks if chunk})
    encodings = tokenizer.encode_batch(unique, add_special_tokens=False)
    sizes = {chunk: len(e.ids) for chunk, e in zip(unique, encodings)}
    return TokenCounts(tuple(sum(sizes[c] for c in chunks if c) for chunks in chunked), True)


def clip_tokenizer(tokenizer_dir: Path = TOKENIZER_DIR):
    """The CLIP BPE as a `tokenizers.Tokenizer` (raises when the files or the library are missing)."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    model = BPE.from_file(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"),
                          continuing_subword_prefix="", end_of_word_suffix="</w>", fuse_unk=False,
                          unk_token=UNK_TOKEN)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    return tokenizer


def _load(tokenizer_dir: Path):
    if not (tokenizer_dir / "vocab.json").is_file() or not (tokenizer_dir / "merges.txt").is_file():
        return None, f"token counts are estimates: the CLIP tokenizer files are missing from {tokenizer_dir}"
    try:
        return clip_tokenizer(tokenizer_dir), ""
    except ImportError:
        return None, "token counts are estimates: the `tokenizers` package is not installed"


def _estimate(caption: str) -> int:
    # Roughly one token per word, digit or run of punctuation; long words cost more.
    pieces = _ESTIMATE_SPLIT.findall(caption.lower())
    return sum(1 + len(p) // 8 for p in pieces)
