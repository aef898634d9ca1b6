"""The wizard's rules without a screen: answers and defaults, path completion, the steps preview."""

from __future__ import annotations

from pathlib import Path

import pytest

from easytrain import answers as answers_file
from easytrain import questions as Q
from easytrain.plan import TrainPlan
from easytrain.commands.wizard import after_exit
from easytrain.tui.flow import Outcome
from easytrain.tui.paths import complete_path
from easytrain.tui.preview import StepsPreview
from easytrain.tui.state import WizardState
from tests._tui_helpers import make_workdir


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return make_workdir(tmp_path)


def started(workdir: Path) -> WizardState:
    state = WizardState(base_dir=workdir)
    state.set_answer(Q.BY_ID["base_model"], "builtin:tiny", typed=True)
    state.set_answer(Q.BY_ID["image_folder"], "images/", typed=True)
    return state


def test_defaulted_answers_follow_and_typed_answers_stay(workdir):
    state = started(workdir)
    assert state.value("image_folder") == "images"  # the trailing slash is dropped
    state.set_answer(Q.BY_ID["unet_lr"], 2e-4, typed=True)
    state.set_answer(Q.BY_ID["optimizer"], "Prodigy", typed=True)
    assert state.value("unet_lr") == 2e-4
    assert state.value("text_encoder_lr") == 1.0 and state.value("scheduler") == "constant_with_warmup"
    state.set_answer(Q.BY_ID["optimizer"], "AdamW8bit", typed=False)
    assert state.value("text_encoder_lr") == 1e-4 and state.value("network_alpha") == 8.0


def test_questions_that_stop_applying_are_dropped(workdir):
    state = started(workdir)
    state.set_answer(Q.BY_ID["network_type"], "LoCon", typed=True)
    state.set_answer(Q.BY_ID["conv_dim"], 12, typed=True)
    assert [q.id for q in state.flow()].count("conv_dim") == 1
    state.set_answer(Q.BY_ID["network_type"], "LoRA", typed=False)
    assert "conv_dim" not in state.values() and "conv_dim" not in state.typed
    assert "conv_dim" not in [q.id for q in state.flow()]
    state.set_answer(Q.BY_ID["network_type"], "LoCon", typed=True)
    assert state.value("conv_dim") == 8  # dropped means dropped: the default again


def test_architecture_is_asked_only_when_detection_is_unsure(workdir):
    state = started(workdir)
    ids = [q.id for q in state.flow()]
    assert "architecture" not in ids and state.value("architecture") == "sd1"
    assert state.origin("architecture") == "detected"
    assert WizardState(base_dir=workdir).flow()[1].id == "architecture"  # no model yet: cannot know
    assert state.next_after("base_model").id == "image_folder"
    assert state.previous_before("image_folder").id == "base_model"


def test_advanced_questions_only_after_the_gate(workdir):
    state = started(workdir)
    assert not any(q.advanced for q in state.flow())
    state.set_answer(Q.ADVANCED_GATE, True, typed=True)
    assert [q for q in state.flow() if q.advanced][0] is Q.ADVANCED[0]


def test_a_loaded_file_keeps_its_choices_and_lets_defaults_follow(workdir):
    saved = answers_file.save(answers_file.defaults(base_model="builtin:tiny", image_folder=str(workdir / "images"),
                                                    network_dim=32, network_alpha=16.0),
                              workdir / "a.json")
    state = WizardState.from_answers(answers_file.load(saved), workdir)
    assert state.is_typed("network_dim") and not state.is_typed("network_alpha")  # 16 = 32 / 2
    state.set_answer(Q.BY_ID["network_dim"], 8, typed=True)
    assert state.value("network_alpha") == 4.0
    assert state.answers().to_dict()["network_dim"] == 8


def test_wizard_checks_name_the_problem_with_short_paths(workdir):
    state = started(workdir)
    assert state.check(Q.BY_ID["image_folder"], "nope") == "folder not found: nope"
    assert "must end in .safetensors or .sft or .ckpt" in state.check(Q.BY_ID["base_model"], "model.bin")
    lora = workdir / "lora.safetensors"
    from safetensors.numpy import save_file
    import numpy as np

    save_file({"lora_unet_x.lora_down.weight": np.zeros((2, 2), dtype=np.float32)}, str(lora))
    assert "LoRA" in state.check(Q.BY_ID["base_model"], "lora.safetensors")


def test_steps_preview_matches_the_plan(workdir):
    state = started(workdir)
    state.set_answer(Q.BY_ID["batch_size"], 3, typed=True)
    line = StepsPreview().line(state.values(), workdir)
    plan = TrainPlan.from_answers(state.answers())
    assert line.text == plan.steps.line()
    assert line.level == "ok" and line.warning.startswith("28 steps per epoch, not 27")  # tiny: no steps warning
    full_size = StepsPreview().line({**state.values(), "base_model": "sd15.safetensors"}, workdir)
    assert full_size.level == "warn" and "below the usual" in full_size.warning
    assert StepsPreview().line({"image_folder": None}, workdir) is None
    state.set_answer(Q.BY_ID["validation_split"], 0.25, typed=True)        # 4 of the 16 images held out
    line = StepsPreview().line(state.values(), workdir)
    plan = TrainPlan.from_answers(state.answers())
    assert plan.validation.images == 4 and line.text == plan.steps.line() and line.text.startswith("12 images")


def test_tab_completion(workdir):
    (workdir / "model.safetensors").write_bytes(b"x")
    (workdir / "notes.txt").write_text("x")
    (workdir / "more").mkdir()
    assert complete_path("ima", "folder", (), workdir).text == "images/"
    assert complete_path("images/5", "folder", (), workdir).text == "images/5_shapes/"
    many = complete_path("m", "model", Q.MODEL_EXTENSIONS, workdir)
    assert many.text == "mo" and set(many.candidates) == {"model.safetensors", "more/"}
    assert complete_path("mod", "model", Q.MODEL_EXTENSIONS, workdir).text == "model.safetensors"
    assert complete_path("no", "file", (".json",), workdir).candidates == ()  # .txt is filtered out
    assert complete_path("mo", "folder", (), workdir).text == "more/"  # folders only
    assert complete_path(str(workdir) + "/im", "folder", (), Path("/")).text == str(workdir / "images") + "/"


def test_after_exit_prints_the_command_for_later(capsys):
    assert after_exit(Outcome("exit", "/x/answers/my lora.json", "answers/my lora.json")) == 0
    assert "easytrain train 'answers/my lora.json'" in capsys.readouterr().out
    assert after_exit(Outcome("quit")) == 0
    assert "nothing was started" in capsys.readouterr().out
