"""The presets in answers/presets/: each loads, validates, and trains the tiny model; broken ones are named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from _train_helpers import Recorder, make_colour_dataset
from easytrain import answers as answers_file
from easytrain import questions as Q
from easytrain.errors import UserError
from easytrain.presets import PRESET_DIR, load_preset, shipped_presets

NAMES = ["character", "flux_character", "outfit", "prodigy", "style"]
FLUX_NAMES = ["flux_character"]   # trained on the tiny Flux.1 dev below
SD_NAMES = [name for name in NAMES if name not in FLUX_NAMES]


def test_the_shipped_presets_hold_the_guides_recipes():
    presets = {p.name: p for p in shipped_presets()}
    assert sorted(presets) == NAMES
    character = presets["character"].values
    assert (character["optimizer"], character["network_dim"], character["network_alpha"], character["unet_lr"],
            character["text_encoder_lr"], character["scheduler"], character["scheduler_restarts"]) == \
        ("AdamW8bit", 16, 8.0, 5e-4, 1e-4, "cosine_with_restarts", 3)
    style = presets["style"].values
    assert style["train_parts"] == "unet_only" and style["unet_lr"] < character["unet_lr"]
    prodigy = presets["prodigy"].values
    assert (prodigy["unet_lr"], prodigy["text_encoder_lr"], prodigy["scheduler"]) == (1.0, 1.0, "constant_with_warmup")
    assert prodigy["network_alpha"] == prodigy["network_dim"]
    assert prodigy["optimizer_args"] == Q.PRODIGY_ARGS == {
        "decouple": True, "weight_decay": 0.01, "d_coef": 2, "use_bias_correction": True, "safeguard_warmup": True}
    for preset in presets.values():
        assert preset.description and not preset.description.startswith("the settings in")
        assert not set(preset.values) & {"base_model", "image_folder", "output_folder", "output_name"}


@pytest.mark.parametrize("name", SD_NAMES)
def test_a_preset_with_a_model_and_folder_added_trains_the_tiny_model(tmp_path, name):
    from easytrain.plan import TrainPlan
    from easytrain.train.loop import run_training

    preset = load_preset(PRESET_DIR / f"{name}.json")
    images = make_colour_dataset(tmp_path / "images", size=64)
    data = json.loads(preset.path.read_text())  # the file as a user copies it
    data.update(base_model="builtin:tiny", image_folder=str(images), output_folder=str(tmp_path / "out"),
                output_name=name)
    # shorter and smaller than a real run, so a CPU finishes in seconds; the recipe itself is untouched
    data.update(epochs=1, resolution=256, bucket_no_upscale=True, mixed_precision="no", save_state=False,
                network_dim=4, network_alpha=4.0 if name == "prodigy" else 2.0, conv_dim=2 if "conv_dim" in data
                else None)
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    answers = answers_file.load(path)  # the "$comment" travels with the copy
    assert answers.optimizer == preset.values["optimizer"] and answers.scheduler == preset.values["scheduler"]
    plan = TrainPlan.from_answers(answers)
    result = run_training(plan, Recorder())
    assert result.final_path.is_file() and result.steps == plan.total_steps == 2


def test_the_flux_preset_is_kohyas_documented_flux_command():
    flux = load_preset(PRESET_DIR / "flux_character.json").values
    assert (flux["network_type"], flux["network_dim"], flux["network_alpha"], flux["optimizer"], flux["unet_lr"],
            flux["scheduler"], flux["epochs"]) == ("LoRA", 16, 1.0, "AdamW8bit", 1e-4, "constant", 10)
    assert (flux["timestep_sampling"], flux["model_prediction_type"], flux["guidance_scale"]) == ("flux_shift", "raw", 1.0)
    assert flux["train_parts"] == "unet_only" and flux["min_snr_gamma"] == 0 and not flux["shuffle_captions"]
    assert not set(flux) & {"fp8_base", "blocks_to_swap"}  # left to the GPU the run is on


def test_the_flux_preset_checks_on_the_tiny_flux_model(tmp_path, monkeypatch):
    """The preset with a Flux model and a folder added: the plan `check` prints (the text encoders' outputs
    cached, the flow settings reaching the family, nothing refused or ignored), with a GPU known."""
    from easytrain import machine
    from easytrain.commands.check import plan_lines

    monkeypatch.setattr(machine, "gpu_info", lambda: machine.GpuInfo("a 24 GB card", 24.0))
    from easytrain.families.flux.tiny import tiny_flux_paths
    from easytrain.plan import TrainPlan

    preset = load_preset(PRESET_DIR / "flux_character.json")
    images = make_colour_dataset(tmp_path / "images", size=64)
    data = json.loads(preset.path.read_text())
    data.update(base_model=str(tiny_flux_paths().dev), image_folder=str(images), output_folder=str(tmp_path / "out"),
                output_name="flux", epochs=1, resolution=256, bucket_no_upscale=True)
    path = tmp_path / "flux.json"
    path.write_text(json.dumps(data))
    plan = TrainPlan.from_answers(answers_file.load(path))
    assert plan.model.options["timestep_sampling"] == "flux_shift" and plan.model.options["guidance_scale"] == 1.0
    assert plan.text_outputs_cached and not plan.network.train_text_encoder
    assert not [w for w in plan.warnings if "ignored" in w]
    text = "\n".join(plan_lines(plan))
    assert "network: LoRA dim 16 alpha 1" in text and "GPU memory for Flux.1 at 256x256" in text


def edited(tmp_path: Path, **changes) -> Path:
    data = json.loads((PRESET_DIR / "character.json").read_text())
    data.update(changes)
    path = tmp_path / "presets" / "mine.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_a_preset_edited_into_nonsense_names_the_file_and_every_key(tmp_path):
    path = edited(tmp_path, network_dim="big", optimizer="Adamm", netwrok_alpha=4)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(answers_file.AnswersError) as err:
        load_preset(path)
    assert str(err.value).startswith(f"{path}: 3 problems in the answers file")
    problems = "\n".join(err.value.problems)
    assert "network_dim: must be an integer from 1 to 1024, got 'big'" in problems
    assert "optimizer: must be one of" in problems and "netwrok_alpha: unknown key" in problems
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    with pytest.raises(UserError, match="list.json: a preset must hold a JSON object"):
        load_preset(_write(tmp_path / "list.json", "[1]"))
    with pytest.raises(UserError, match="not valid JSON"):
        load_preset(_write(tmp_path / "mine.json", "{\"optimizer\": "))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
