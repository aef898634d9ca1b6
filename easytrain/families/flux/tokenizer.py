"""The tokenizers Flux.1 and Chroma use: the real CLIP BPE (shipped with easytrain) and T5 v1.1's.

T5 v1.1 (32100 tokens: 32000 SentencePiece pieces and 100 sentinels, Apache-2.0) is the tokenizer of
``t5xxl_fp16.safetensors``; a stand-in vocabulary would silently train on wrong token ids, so real
checkpoints always get the real one. It ships in ``t5_tokenizer/`` beside this module (tokenizer.json,
tokenizer_config.json and its LICENSE; build_t5_tokenizer.py made them from a PyPI package). A folder
holding it has ``tokenizer.json`` (or SentencePiece's ``spiece.model``); it is looked for, in order
(``t5_tokenizer_places``): the answer ``t5_tokenizer``, the folder ``EASYTRAIN_T5_TOKENIZER`` names, the
shipped ``t5_tokenizer/``, where users already have it (a diffusers Flux folder's ``tokenizer_2/``, Chroma's ``tokenizer/``; the ComfyUI
install holding the model: ``comfy/text_encoders/t5_tokenizer``; the Hugging Face cache's FLUX.1
dev / schnell ``tokenizer_2`` and google/t5-v1_1-xxl snapshots), and ``shared/t5_tokenizer`` in or
beside the source checkout. The plan looks before anything loads (``check`` says where it looked).
Known answer: "a photo of a cat" -> 3 9 1202 13 3 9 1712 1.

kohya's lengths: 512 T5 tokens for dev (and Chroma), 256 for schnell; CLIP-L takes 77.
The tiny test models use a tiny SentencePiece-style (Unigram) T5 tokenizer made in code.
"""

from __future__ import annotations

import os
from pathlib import Path

from easytrain.errors import UserError
from easytrain.families.flux.detect import CHROMA, FLUX_DEV, FLUX_SCHNELL

T5_TOKENIZER_ENV = "EASYTRAIN_T5_TOKENIZER"
T5_VOCAB_SIZE = 32100
T5_MAX_LENGTH = {FLUX_DEV: 512, FLUX_SCHNELL: 256, CHROMA: 512}
CLIP_MAX_LENGTH = 77


HF_REPOS = ("black-forest-labs--FLUX.1-dev", "black-forest-labs--FLUX.1-schnell")
HF_T5_REPO = "google--t5-v1_1-xxl"
COMFY_T5_TOKENIZER = Path("comfy") / "text_encoders" / "t5_tokenizer"


def holds_t5_tokenizer(folder: Path) -> bool:
    """A tokenizer folder transformers' T5TokenizerFast reads: tokenizer.json or SentencePiece's spiece.model."""
    return any((folder / name).is_file() for name in ("tokenizer.json", "spiece.model"))


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache: HF_HUB_CACHE, HF_HOME/hub, or ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def _model_places(model: Path) -> list[Path]:
    """Where a model's own install keeps the T5 tokenizer: a diffusers folder's tokenizer_2/ (Chroma:
    tokenizer/), and the ComfyUI install the model lies in (comfy/text_encoders/t5_tokenizer)."""
    model = Path(model).expanduser()
    places = []
    if model.is_dir():
        places += [model / "tokenizer_2", model / "tokenizer"]
    for folder in (model if model.is_dir() else model.parent, *model.parents):
        if (folder / COMFY_T5_TOKENIZER).is_dir():
            places.append(folder / COMFY_T5_TOKENIZER)
            break
    return places


def _hf_cache_places() -> list[Path]:
    hub = hf_hub_cache()
    places = []
    for repo in HF_REPOS:
        places += sorted((hub / f"models--{repo}" / "snapshots").glob("*/tokenizer_2"))
    places += sorted((hub / f"models--{HF_T5_REPO}" / "snapshots").glob("*"))
    return places


def t5_tokenizer_places(model: str | Path | None = None, answer: str | Path | None = None) -> list[Path]:
    """Where the T5 tokenizer files are looked for, in order (the answer ``t5_tokenizer`` alone when set)."""
    if answer:
        return [Path(answer).expanduser()]
    here = Path(__file__).resolve().parent
    places = []
    if os.environ.get(T5_TOKENIZER_ENV):
        places.append(Path(os.environ[T5_TOKENIZER_ENV]).expanduser())
    places.append(here / "t5_tokenizer")
    if model is not None and not str(model).startswith("builtin:"):
        places += _model_places(Path(model))
    places += _hf_cache_places()
    root = here.parents[2]  # the checkout holding easytrain/
    places += [root / "shared" / "t5_tokenizer", root.parent / "shared" / "t5_tokenizer"]
    return places


def t5_tokenizer_dir(model: str | Path | None = None, answer: str | Path | None = None) -> Path:
    """The first place holding the T5 tokenizer; UserError naming every place looked at."""
    places = t5_tokenizer_places(model, answer)
    for place in places:
        if holds_t5_tokenizer(place):
            return place
    if answer:
        raise UserError(f"t5_tokenizer: {places[0]} holds no T5 tokenizer (tokenizer.json or spiece.model)")
    shown = ", ".join(str(p) for p in places) + f", {hf_hub_cache()}/models--{HF_REPOS[0]}/snapshots/*/tokenizer_2"
    raise UserError(f"the T5 v1.1 tokenizer (tokenizer.json) is not on this machine; looked in {shown}; set "
                    f"t5_tokenizer in the answers (or {T5_TOKENIZER_ENV}) to a folder holding it: FLUX.1-dev's "
                    "tokenizer_2/ or ComfyUI's comfy/text_encoders/t5_tokenizer")


def load_t5_tokenizer(max_length: int = 512, folder: str | Path | None = None, *,
                      model: str | Path | None = None, answer: str | Path | None = None):
    """The real T5 v1.1 tokenizer (transformers' T5TokenizerFast), offline; pads and cuts at ``max_length``.

    ``folder``: that folder as it is; else the first of t5_tokenizer_places(model, answer), checked to be
    T5 v1.1's."""
    from transformers import T5TokenizerFast

    looked_up = folder is None
    folder = t5_tokenizer_dir(model, answer) if looked_up else Path(folder)
    tokenizer = T5TokenizerFast.from_pretrained(str(folder), local_files_only=True)
    if looked_up and len(tokenizer) != T5_VOCAB_SIZE:
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
