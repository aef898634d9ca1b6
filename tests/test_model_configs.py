"""The shipped per-architecture configs and the real CLIP tokenizer."""

from __future__ import annotations

import json

import pytest

from easytrain.families.registry import config_folder
from easytrain.model.load import CLIP_TOKENIZER_DIR, load_clip_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_clip_tokenizer()


def test_real_clip_tokenizer_known_answer(tokenizer):
    assert len(tokenizer) == 49408
    assert tokenizer.model_max_length == 77
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.pad_token_id == 49407


def test_sd2_pads_with_exclamation_mark():
    tok = load_clip_tokenizer("!")
    ids = tok("a cat", padding="max_length", max_length=6).input_ids
    assert ids == [49406, 320, 2368, 49407, 0, 0]


def test_shipped_vocab_matches_clip_construction():
    vocab = json.loads((CLIP_TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    merges = (CLIP_TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version")
    assert len(merges) - 1 == 49408 - 512 - 2
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab["".join(merges[1].split())] == 512
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert sorted(vocab.values()) == list(range(49408))


def test_build_script_reproduces_the_shipped_files(tmp_path):
    """Rebuild from a merge list made of the shipped merges: same algorithm, same files."""
    import gzip

    from easytrain.model.build_tokenizer_files import write_tokenizer_files

    merges = (CLIP_TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8")
    gz = tmp_path / "bpe.txt.gz"
    gz.write_bytes(gzip.compress(("header line\n" + merges.split("\n", 1)[1]).encode("utf-8")))
    write_tokenizer_files(gz, tmp_path / "out")
    assert (tmp_path / "out" / "vocab.json").read_bytes() == (CLIP_TOKENIZER_DIR / "vocab.json").read_bytes()
    assert (tmp_path / "out" / "merges.txt").read_bytes() == (CLIP_TOKENIZER_DIR / "merges.txt").read_bytes()


# Parameter counts of the public checkpoints (UNet, VAE, text encoder[s]).
EXPECTED = {
    "sd1": (859_520_964, 83_653_863, [123_060_480]),
    "sd2": (865_910_724, 83_653_863, [340_387_840]),
    "sd2-v": (865_910_724, 83_653_863, [340_387_840]),
    "sdxl": (2_567_463_684, 83_653_863, [123_060_480, 694_659_840]),
}


@pytest.mark.parametrize("arch", sorted(EXPECTED))
def test_config_folders_build_models_of_the_public_sizes(arch):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = config_folder(arch)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        encoders = [CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))]
        if arch == "sdxl":
            encoders.append(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2")))
    assert (count(unet), count(vae), [count(e) for e in encoders]) == EXPECTED[arch]


@pytest.mark.parametrize("arch, prediction, pad", [
    ("sd1", "epsilon", "<|endoftext|>"), ("sd2", "epsilon", "!"), ("sd2-v", "v_prediction", "!"),
    ("sdxl", "epsilon", "<|endoftext|>"),
])
def test_scheduler_and_tokenizer_configs(arch, prediction, pad):
    folder = config_folder(arch)
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == prediction
    assert (scheduler["beta_start"], scheduler["beta_end"], scheduler["beta_schedule"]) == (0.00085, 0.012, "scaled_linear")
    assert json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())["pad_token"] == pad
    index = json.loads((folder / "model_index.json").read_text())
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= index.keys()
