"""The tokenizers Flux.1 and Chroma use: the real CLIP BPE (shipped with easytrain) and T5 v1.1's.

T5 v1.1 (32100 tokens: 32000 SentencePiece pieces and 100 sentinels, Apache-2.0) is the tokenizer of
``t5xxl_fp16.safetensors``; a stand-in vocabulary would silently train on wrong token ids, so real
checkpoints always get the real one. It ships in ``t5_tokenizer/`` beside this module (tokenizer.json,
tokenizer_config.json and its LICENSE; build_t5_tokenizer.py made them from a PyPI package). A folder
``EASYTRAIN_T5_TOKENIZER`` names is used first, and ``shared/t5_tokenizer`` in or beside the source
checkout after the shipped one. Known answer: "a photo of a cat" -> 3 9 1202 13 3 9 1712 1.

kohya's lengths: 512 T5 tokens for dev (and Chroma), 256 for schnell; CLIP-L takes 77.
The tiny test models use a tiny SentencePiece-style (Unigram) T5 tokenizer made in code.
"""

from __future__ import annotations

import os
from pathlib import Path

from easytrain.errors import UserError
from easytrain.families.flux.detect import CHROMA, FLUX_DEV, FLUX_SCHNELL

T5_TOKENIZER_ENV = "EASYTRAIN_T5_TOKENIZER"
T5_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
T5_VOCAB_SIZE = 32100
T5_MAX_LENGTH = {FLUX_DEV: 512, FLUX_SCHNELL: 256, CHROMA: 512}
CLIP_MAX_LENGTH = 77


def t5_tokenizer_places() -> list[Path]:
    """Where the T5 tokenizer files are looked for, in order."""
    here = Path(__file__).resolve().parent
    places = []
    if os.environ.get(T5_TOKENIZER_ENV):
        places.append(Path(os.environ[T5_TOKENIZER_ENV]).expanduser())
    places.append(here / "t5_tokenizer")
    root = here.parents[2]  # the checkout holding easytrain/
    places += [root / "shared" / "t5_tokenizer", root.parent / "shared" / "t5_tokenizer"]
    return places


def t5_tokenizer_dir() -> Path:
    """The first place holding the T5 tokenizer files; UserError naming every place looked at."""
    places = t5_tokenizer_places()
    for place in places:
        if all((place / name).is_file() for name in T5_TOKENIZER_FILES):
            return place
    raise UserError("the T5 v1.1 tokenizer files (tokenizer.json, tokenizer_config.json) "
                    f"are not installed; looked in {', '.join(str(p) for p in places)}; "
                    f"set {T5_TOKENIZER_ENV} to a folder holding them")


def load_t5_tokenizer(max_length: int = 512, folder: str | Path | None = None):
    """The real T5 v1.1 tokenizer (transformers' T5TokenizerFast), offline; pads and cuts at ``max_length``."""
    from transformers import T5TokenizerFast

    shipped = folder is None
    folder = t5_tokenizer_dir() if shipped else Path(folder)
    tokenizer = T5TokenizerFast.from_pretrained(str(folder), local_files_only=True)
    if shipped and len(tokenizer) != T5_VOCAB_SIZE:
        raise UserError(f"{folder}: this T5 tokenizer has {len(tokenizer)} tokens, not T5 v1.1's {T5_VOCAB_SIZE}")
    tokenizer.model_max_length = max_length
    return tokenizer


def load_clip_l_tokenizer():
    """The real CLIP BPE (49408 tokens) shipped with easytrain, as SD1's text encoder uses."""
    from easytrain.model.load import load_clip_tokenizer

    return load_clip_tokenizer()


def t5_max_length(kind: str) -> int:
    return T5_MAX_LENGTH[kind]


# ---- the tiny models' tokenizer ---------------------------------------------------------------

_TINY_T5_WORDS = ("a", "photo", "of", "the", "cat", "dog", "red", "green", "blue", "yellow", "circle",
                  "square", "triangle", "shape", "on", "white", "background")


def build_tiny_t5_tokenizer(max_length: int = 32, folder: str | Path | None = None):
    """A T5TokenizerFast over a small Unigram vocabulary (pad 0, </s> 1, <unk> 2, words, letters)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + word, -1.0) for word in _TINY_T5_WORDS]
    pieces += [(ch, -5.0) for ch in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.'-!?"]
    backend = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", 1)])
    tokenizer = T5TokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                extra_ids=0, additional_special_tokens=[])
    tokenizer.model_max_length = max_length
    if folder is not None:
        tokenizer.save_pretrained(str(folder))
    return tokenizer
