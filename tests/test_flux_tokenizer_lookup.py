"""Where the T5 v1.1 tokenizer is found: the answer, a diffusers Flux folder, the ComfyUI install holding the
model, the Hugging Face cache; a missing one is one line naming where it looked, raised by the plan.

The real tokenizer is copied into a ComfyUI-shaped tmp_path from the one easytrain ships."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from easytrain.errors import UserError
from easytrain.families.flux import tokenizer as tok

SHIPPED = Path(tok.__file__).parent / "t5_tokenizer"


@pytest.fixture(autouse=True)
def nowhere_else(tmp_path, monkeypatch):
    """Only the places a test makes: no environment variable, an empty Hugging Face cache, no shared copy."""
    monkeypatch.delenv(tok.T5_TOKENIZER_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    real = tok.t5_tokenizer_places
    monkeypatch.setattr(tok, "t5_tokenizer_places", lambda model=None, answer=None: [
        place for place in real(model, answer) if "shared" not in place.parts and place.name != "t5_tokenizer"
        or tmp_path in place.parents])


def fake_tokenizer(folder: Path) -> Path:
    """A folder shaped like a T5 tokenizer's (its files' names; the lookup reads no more)."""
    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).write_text("{}", encoding="utf-8")
    return folder


def test_the_answer_wins_and_a_wrong_answer_says_so(tmp_path):
    chosen = fake_tokenizer(tmp_path / "mine")
    assert tok.t5_tokenizer_dir(tmp_path / "model.safetensors", chosen) == chosen
    with pytest.raises(UserError, match=r"^t5_tokenizer: .*empty holds no T5 tokenizer"):
        tok.t5_tokenizer_dir(None, tmp_path / "empty")


def test_a_diffusers_flux_folder_has_its_own(tmp_path):
    folder = tmp_path / "FLUX.1-dev"
    own = fake_tokenizer(folder / "tokenizer_2")
    assert tok.t5_tokenizer_dir(folder) == own


def test_the_comfyui_install_holding_the_model(tmp_path):
    comfy = tmp_path / "ComfyUI"
    own = fake_tokenizer(comfy / "comfy" / "text_encoders" / "t5_tokenizer")
    model = comfy / "models" / "diffusion_models" / "flux1-dev.safetensors"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")
    assert tok.t5_tokenizer_dir(model) == own


@pytest.mark.parametrize("repo,sub", [("models--black-forest-labs--FLUX.1-dev", "tokenizer_2"),
                                      ("models--black-forest-labs--FLUX.1-schnell", "tokenizer_2"),
                                      ("models--google--t5-v1_1-xxl", "")])
def test_the_hugging_face_cache(tmp_path, repo, sub):
    snapshot = tmp_path / "hf-hub" / repo / "snapshots" / "0123abcd"
    if sub:
        own = fake_tokenizer(snapshot / sub)
    else:
        snapshot.mkdir(parents=True)
        (snapshot / "spiece.model").write_bytes(b"")  # google's repo has the SentencePiece model only
        own = snapshot
    assert tok.t5_tokenizer_dir(tmp_path / "elsewhere" / "model.safetensors") == own


def test_none_found_is_one_line_naming_the_places(tmp_path):
    with pytest.raises(UserError) as caught:
        tok.t5_tokenizer_dir(tmp_path / "model.safetensors")
    text = str(caught.value)
    assert "\n" not in text and "looked in" in text and "hf-hub" in text and "set t5_tokenizer" in text


def test_the_real_tokenizer_from_a_comfyui_install(tmp_path):
    comfy = tmp_path / "ComfyUI"
    shutil.copytree(SHIPPED, comfy / "comfy" / "text_encoders" / "t5_tokenizer")
    model = comfy / "models" / "unet" / "flux1-dev.safetensors"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")
    tokenizer = tok.load_t5_tokenizer(512, model=model)
    assert len(tokenizer) == tok.T5_VOCAB_SIZE
    assert tokenizer("a photo of a cat").input_ids == [3, 9, 1202, 13, 3, 9, 1712, 1]


def test_the_plan_refuses_a_real_flux_file_without_a_tokenizer(tmp_path):
    """A real (untagged) Flux file in a ComfyUI tree with its companions but no tokenizer: check says so."""
    from safetensors.torch import load_file, save_file

    from _train_helpers import tiny_answers
    from easytrain.families.flux.tiny import tiny_flux_paths
    from easytrain.plan import TrainPlan

    paths = tiny_flux_paths()
    models = tmp_path / "models"
    for source, target in ((paths.clip_l, "text_encoders/clip_l.safetensors"),
                           (paths.t5xxl, "text_encoders/t5xxl_fp16.safetensors"), (paths.ae, "vae/ae.safetensors")):
        (models / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, models / target)
    model = models / "diffusion_models" / "untagged.safetensors"
    model.parent.mkdir(parents=True)
    save_file(load_file(str(paths.dev)), str(model))  # no tiny marker: a real checkpoint needs the real tokenizer
    answers = dict(base_model=str(model), architecture="auto", resolution=256, train_parts="unet_only",
                   text_encoder_lr=0.0, mixed_precision="bf16")
    with pytest.raises(UserError, match="T5 v1.1 tokenizer .* is not on this machine"):
        TrainPlan.from_answers(tiny_answers(tmp_path, **answers))
    fake_tokenizer(tmp_path / "tok")
    plan = TrainPlan.from_answers(tiny_answers(tmp_path, **answers, t5_tokenizer=str(tmp_path / "tok")))
    assert plan.model.options["t5_tokenizer"] == str(tmp_path / "tok")
