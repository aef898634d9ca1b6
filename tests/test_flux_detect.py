"""Telling Flux.1 dev, schnell and Chroma apart from a header (standard library only), and the T5 tokenizer."""

from __future__ import annotations

import subprocess
import sys

import pytest

from easytrain.errors import UserError
from easytrain.families.flux.detect import (
    CHROMA,
    DESCRIPTIONS,
    FLUX_DEV,
    FLUX_SCHNELL,
    describe_flux,
    detect_flux,
    detect_flux_folder,
    file_parts,
    strip_prefix,
)
from easytrain.families.flux.tokenizer import (
    T5_MAX_LENGTH,
    build_tiny_t5_tokenizer,
    load_t5_tokenizer,
    t5_max_length,
    t5_tokenizer_dir,
)

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _header(kind: str, prefix: str = "") -> dict:
    from easytrain.families.flux.tiny import build_tiny_transformer

    return {prefix + k: {"dtype": "F32", "shape": list(v.shape)}
            for k, v in build_tiny_transformer(kind).state_dict().items()}


@pytest.mark.parametrize("kind", [FLUX_DEV, FLUX_SCHNELL, CHROMA])
@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_bfl_headers(kind, prefix):
    header = _header(kind, prefix)
    assert detect_flux(header) == kind
    assert file_parts(header) == ("transformer",)
    assert set(strip_prefix(header)) == set(_header(kind))


@pytest.mark.parametrize("kind", [FLUX_DEV, FLUX_SCHNELL, CHROMA])
def test_diffusers_layout_headers(kind):
    import torch

    from easytrain.families.flux.convert import bfl_to_diffusers

    state = {k: torch.empty(v["shape"], device="meta") for k, v in _header(kind).items()}
    assert detect_flux(bfl_to_diffusers(state)) == kind


def test_other_models_are_not_flux():
    assert detect_flux({"model.diffusion_model.input_blocks.0.0.weight": {}}) is None
    assert detect_flux({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": {}}) is None
    assert detect_flux({}) is None


def test_descriptions():
    assert set(DESCRIPTIONS) == {FLUX_DEV, FLUX_SCHNELL, CHROMA}
    assert "dev" in describe_flux(FLUX_DEV) and "schnell" in describe_flux(FLUX_SCHNELL)
    assert "Chroma" in describe_flux(CHROMA)


def test_detection_imports_no_torch():
    code = ("import sys, easytrain.families.flux.detect as d; "
            "assert d.detect_flux({'double_blocks.0.img_attn.qkv.weight': 0, 'img_in.weight': 0}) == 'flux-schnell'; "
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'safetensors') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_diffusers_folders():
    from easytrain.families.flux.tiny import tiny_flux_paths

    paths = tiny_flux_paths()
    assert detect_flux_folder(paths.dev_diffusers) == FLUX_DEV
    assert detect_flux_folder(paths.chroma_diffusers) == CHROMA
    assert detect_flux_folder(paths.root) is None


# ---- tokenizers -------------------------------------------------------------------------------


def test_token_lengths_as_kohya():
    assert t5_max_length(FLUX_DEV) == 512 and t5_max_length(FLUX_SCHNELL) == 256
    assert set(T5_MAX_LENGTH) == {FLUX_DEV, FLUX_SCHNELL, CHROMA}


def test_t5_tokenizer_known_answer():
    folder = t5_tokenizer_dir()   # shipped with easytrain
    assert (folder / "LICENSE").is_file() and "Apache License" in (folder / "LICENSE").read_text()
    tokenizer = load_t5_tokenizer(512)
    assert len(tokenizer) == 32100
    assert tokenizer("a photo of a cat").input_ids == [3, 9, 1202, 13, 3, 9, 1712, 1]
    padded = load_t5_tokenizer(256)(["a photo of a cat"], padding="max_length", truncation=True)
    assert len(padded.input_ids[0]) == 256 and sum(padded.attention_mask[0]) == 8


def test_missing_t5_tokenizer_is_a_clear_error(tmp_path, monkeypatch):
    from easytrain.families.flux import tokenizer

    monkeypatch.setattr(tokenizer, "t5_tokenizer_places", lambda *args: [tmp_path / "nowhere"])
    with pytest.raises(UserError, match="T5 v1.1 tokenizer .* is not on this machine; looked in .*nowhere"):
        t5_tokenizer_dir()


def test_tiny_t5_tokenizer():
    tokenizer = build_tiny_t5_tokenizer(16)
    ids = tokenizer("a photo of a red circle").input_ids
    assert ids[-1] == tokenizer.eos_token_id == 1 and tokenizer.pad_token_id == 0
    assert 2 not in ids  # every word is in the vocabulary (2 is <unk>)
    assert len(tokenizer(["a cat"], padding="max_length").input_ids[0]) == 16


# ---- the seam's signature ---------------------------------------------------------------------


def test_signature_from_keys():
    from easytrain.families.flux import signature

    found = signature.from_keys(None, _header(CHROMA, "model.diffusion_model."), {})
    assert (found.arch, found.prediction_type, found.sure, found.is_tiny) == (CHROMA, "flow", True, False)
    header = dict(_header(FLUX_DEV), **{"text_encoders.t5xxl.transformer.shared.weight": [32128, 4096],
                                        "vae.decoder.conv_out.weight": [3, 128, 3, 3]})
    assert signature.from_keys(None, header, {}).description.endswith("this file also holds T5-XXL, AE")
    tiny = signature.from_keys(None, _header(FLUX_DEV), {"easytrain.model": "tiny-flux-dev"})
    assert tiny.is_tiny and tiny.arch == FLUX_DEV
    assert signature.from_keys(None, {"model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3]}, {}) is None
    assert signature.PRIORITY > 1


def test_signature_from_folder():
    from easytrain.families.flux import signature
    from easytrain.families.flux.tiny import tiny_flux_paths

    paths = tiny_flux_paths()
    found = signature.from_folder(paths.dev_diffusers, {}, None)
    assert (found.arch, found.is_tiny) == (FLUX_DEV, False) and "diffusers folder" in found.description
    assert signature.from_folder(paths.chroma_diffusers, {}, "tiny-chroma").is_tiny
    assert signature.from_folder(paths.root, {}, None) is None


def test_signature_is_light():
    code = ("import sys, easytrain.families.flux.signature; "
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'safetensors') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
