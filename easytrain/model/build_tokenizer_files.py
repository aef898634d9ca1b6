"""Regenerate the shipped CLIP BPE files (vocab.json, merges.txt) from OpenAI's merge list.

Checkpoints do not carry a tokenizer, and a stand-in vocabulary silently trains
a real text encoder on wrong token ids, so easytrain ships the real one. Its
source is ``bpe_simple_vocab_16e6.txt.gz`` (MIT), which the open-clip-torch and
openai-clip wheels carry. To rebuild:

    pip download --no-deps open-clip-torch -d /tmp/oc
    unzip -o /tmp/oc/open_clip_torch-*.whl 'open_clip/bpe_simple_vocab_16e6.txt.gz' -d /tmp/oc
    python -m easytrain.model.build_tokenizer_files /tmp/oc/open_clip/bpe_simple_vocab_16e6.txt.gz

The vocabulary is built exactly as CLIP's own ``SimpleTokenizer`` does: every
byte (as GPT-2's printable stand-in character), every byte as a word end, then
the first 48894 merges joined, then the two special tokens: 49408 in all.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

from easytrain.fsutil import atomic_write_text
from easytrain.families.sd.tiny import _byte_unicode

CLIP_VOCAB_SIZE = 49408
_MERGE_COUNT = CLIP_VOCAB_SIZE - 2 * 256 - 2  # 48894
DEFAULT_TARGET = Path(__file__).parent / "configs" / "clip_tokenizer"


def clip_vocab_and_merges(bpe_gz: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    # line 0 is a "#version" header; CLIP uses the next 48894 merges only
    merges = [tuple(line.split()) for line in lines[1 : _MERGE_COUNT + 1]]
    if len(merges) != _MERGE_COUNT or any(len(m) != 2 for m in merges):
        raise ValueError(f"{bpe_gz}: not the CLIP BPE merge list (expected {_MERGE_COUNT} pairs)")
    byte_chars = list(_byte_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise ValueError(f"{bpe_gz}: built {len(vocab)} tokens, expected {CLIP_VOCAB_SIZE}")
    return vocab, merges


def write_tokenizer_files(bpe_gz: Path, target: Path = DEFAULT_TARGET) -> None:
    vocab, merges = clip_vocab_and_merges(bpe_gz)
    atomic_write_text(target / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    atomic_write_text(target / "merges.txt", merges_text)


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print("usage: python -m easytrain.model.build_tokenizer_files BPE_GZ [TARGET_FOLDER]", file=sys.stderr)
        return 2
    target = Path(argv[1]) if len(argv) == 2 else DEFAULT_TARGET
    write_tokenizer_files(Path(argv[0]), target)
    print(f"wrote {target / 'vocab.json'} and {target / 'merges.txt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
