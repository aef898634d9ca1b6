"""Build the shipped T5 v1.1 tokenizer files (families/flux/t5_tokenizer/) from a package on PyPI.

    python -m easytrain.families.flux.build_t5_tokenizer stable_diffusion_cpp_python-0.4.7.tar.gz

T5 v1.1's tokenizer (Google's SentencePiece vocabulary of C4, 32000 pieces and 100 sentinels, Apache-2.0) is
what every T5-XXL text encoder of Flux.1 and Chroma reads; checkpoints do not carry it. The PyPI source
distribution of stable-diffusion-cpp-python (MIT) vendors stable-diffusion.cpp, which embeds the
tokenizer.json as a C array (``t5_tokenizer_json_str`` in src/tokenizers/vocab/clip_t5.hpp); this script
takes it out, checks the known answer ("a photo of a cat" -> 3 9 1202 13 3 9 1712 1) and the size, and writes
tokenizer.json with the transformers files that go with it. Run once by a maintainer; the result ships.
"""

from __future__ import annotations

import re
import sys
import tarfile
from pathlib import Path

TARGET = Path(__file__).parent / "t5_tokenizer"
MEMBER = "src/tokenizers/vocab/clip_t5.hpp"
ARRAY = "t5_tokenizer_json_str[] = {"
KNOWN_TEXT, KNOWN_IDS = "a photo of a cat", [3, 9, 1202, 13, 3, 9, 1712, 1]
VOCAB_SIZE = 32100


def tokenizer_json_from_sdist(sdist: Path) -> bytes:
    """The tokenizer.json bytes embedded in the sdist's stable-diffusion.cpp sources."""
    with tarfile.open(sdist) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(MEMBER)), None)
        if member is None:
            raise ValueError(f"{sdist}: no {MEMBER} in it")
        text = tar.extractfile(member).read().decode("utf-8")
    start = text.index(ARRAY) + len(ARRAY)
    body = text[start:text.index("};", start)]
    return bytes(int(x, 16) for x in re.findall(r"0x[0-9a-fA-F]+", body)).rstrip(b"\0")


def write_tokenizer_files(sdist: Path, target: Path = TARGET) -> None:
    from tokenizers import Tokenizer
    from transformers import T5TokenizerFast

    target.mkdir(parents=True, exist_ok=True)
    raw = tokenizer_json_from_sdist(sdist)
    backend = Tokenizer.from_str(raw.decode("utf-8"))
    if backend.get_vocab_size() != VOCAB_SIZE or backend.encode(KNOWN_TEXT).ids != KNOWN_IDS:
        raise ValueError(f"{sdist}: the embedded tokenizer is not T5 v1.1's (size {backend.get_vocab_size()}, "
                         f"{KNOWN_TEXT!r} -> {backend.encode(KNOWN_TEXT).ids})")
    tokenizer = T5TokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                extra_ids=100)
    tokenizer.save_pretrained(str(target))
    (target / "tokenizer.json").write_bytes(raw)      # the file as published, byte for byte


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1])
        return 2
    write_tokenizer_files(Path(argv[0]))
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
