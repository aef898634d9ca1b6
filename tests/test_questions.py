"""The question table's invariants: it is the single source for wizard, file and schema."""

from __future__ import annotations

import pytest

from easytrain import questions as Q
from easytrain.answers import Answers, defaults


def test_every_question_is_an_answers_key_and_back():
    assert list(Answers(defaults(base_model="builtin:tiny", image_folder="x").values()).to_dict())[0] == "schema_version"
    assert len(set(Q.KEYS)) == len(Q.KEYS)
    for q in Q.QUESTIONS:
        assert q.stored and q.group in Q.GROUPS
    assert not Q.ADVANCED_GATE.stored and not Q.SAVE_AS.stored


def test_conditions_and_defaults_only_read_earlier_questions():
    order = {q.id: i for i, q in enumerate(Q.QUESTIONS)}
    for q in Q.QUESTIONS:
        for dep in q.depends_on:
            assert order[dep] < order[q.id], f"{q.id} depends on later question {dep}"


class Recorder(dict):
    """Records which keys a default or condition reads."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def test_declared_dependencies_cover_what_is_read():
    values = Q.applicable_values({"base_model": "builtin:tiny", "image_folder": "images"})
    for q in Q.QUESTIONS:
        rec = Recorder(values)
        q.applies(rec)
        q.default_for(rec)
        undeclared = {k for k in rec.read if not k.startswith("_")} - set(q.depends_on)
        assert not undeclared, f"{q.id} reads {undeclared} without declaring it"


@pytest.mark.parametrize("optimizer", Q.OPTIMIZERS)
@pytest.mark.parametrize("network_type", Q.NETWORK_TYPES)
def test_every_default_passes_its_own_validator(optimizer, network_type):
    values = Q.applicable_values({"base_model": "builtin:tiny", "image_folder": "images",
                                  "optimizer": optimizer, "network_type": network_type,
                                  "use_regularization": True, "reg_image_folder": "reg",
                                  "sample_images": True, "sample_prompts": "p.txt", "scheduler": "polynomial"})
    for q in Q.QUESTIONS:
        if q.id in values and not q.required:
            assert Q.check_value(q, values[q.id], values) is None, (q.id, values[q.id])


def test_adaptive_optimizers_change_dependent_defaults():
    plain = Q.applicable_values({"optimizer": "AdamW8bit"})
    prodigy = Q.applicable_values({"optimizer": "Prodigy"})
    assert (plain["unet_lr"], plain["text_encoder_lr"], plain["scheduler"]) == (5e-4, 1e-4, "cosine_with_restarts")
    assert (prodigy["unet_lr"], prodigy["text_encoder_lr"], prodigy["scheduler"]) == (1.0, 1.0, "constant_with_warmup")
    assert plain["network_alpha"] == 8.0 and prodigy["network_alpha"] == 16.0
    assert plain["optimizer_args"] == {"weight_decay": 0.1, "betas": [0.9, 0.99]}
    assert prodigy["optimizer_args"] == {"decouple": True, "weight_decay": 0.01, "d_coef": 2,
                                         "use_bias_correction": True, "safeguard_warmup": True}
    assert Q.applicable_values({"optimizer": "DAdaptAdam"})["optimizer_args"] == {}


def test_conditions_drop_answers_that_no_longer_apply():
    locon = Q.applicable_values({"network_type": "LoCon"})
    assert locon["conv_dim"] == 8 and locon["conv_alpha"] == 4.0
    lora = Q.applicable_values({"network_type": "LoRA", "conv_dim": 8})
    assert "conv_dim" not in lora and "conv_alpha" not in lora
    loha = Q.applicable_values({"network_type": "LoHa"})
    assert (loha["network_dim"], loha["conv_dim"], loha["conv_alpha"]) == (8, 4, 1.0)


@pytest.mark.parametrize("text,value", [("1e-4", 1e-4), ("0.0001", 1e-4), ("0", 0.0), (" 5e-4 ", 5e-4)])
def test_float_accepts_both_notations(text, value):
    assert Q.parse_text(Q.BY_ID["unet_lr"], text) == pytest.approx(value)


@pytest.mark.parametrize("key,text", [("network_dim", "abc"), ("network_dim", "1.5"), ("unet_lr", "fast"),
                                      ("flip_aug", "maybe"), ("optimizer", "Adam"), ("unet_lr", "nan")])
def test_parse_rejects_with_reason(key, text):
    with pytest.raises(ValueError) as err:
        Q.parse_text(Q.BY_ID[key], text)
    assert str(err.value)


def test_zero_text_encoder_lr_is_a_real_value():
    q = Q.BY_ID["text_encoder_lr"]
    assert Q.parse_text(q, "0") == 0.0 and Q.check_value(q, 0.0, {}) is None


def test_mapping_parse_and_format_round_trip():
    q = Q.BY_ID["optimizer_args"]
    value = Q.parse_text(q, "weight_decay=0.1 betas=0.9,0.99 decouple=true")
    assert value == {"weight_decay": 0.1, "betas": [0.9, 0.99], "decouple": True}
    assert Q.parse_text(q, Q.format_value(q, value)) == value


def test_output_name_rule_and_default(tmp_path):
    q = Q.BY_ID["output_name"]
    assert Q.check_value(q, "my char", {}) is not None
    assert Q.check_value(q, "my_char-v1.2", {}) is None
    (tmp_path / "10_my char!").mkdir()
    assert Q.default_output_name({"image_folder": str(tmp_path)}) == "my_char"


def test_paths_checked_against_base_dir(tmp_path):
    folder_q, model_q = Q.BY_ID["image_folder"], Q.BY_ID["base_model"]
    assert "not found" in Q.check_value(folder_q, "missing", {}, tmp_path)
    (tmp_path / "imgs").mkdir()
    assert Q.check_value(folder_q, "imgs", {}, tmp_path) is None
    assert "must end in" in Q.check_value(model_q, "model.bin", {}, tmp_path)
    assert Q.check_value(model_q, "builtin:tiny", {}, tmp_path) is None
    assert Q.check_value(Q.BY_ID["output_folder"], "new_out", {}, tmp_path) is None


def test_resolution_takes_multiples_of_64_from_64_and_warns_below_the_usual_size():
    resolution, height = Q.BY_ID["resolution"], Q.BY_ID["height"]
    assert Q.check_value(resolution, 64, {}) is None and Q.check_value(height, 64, {}) is None
    assert "from 64 to 4096 and a multiple of 64" in Q.check_value(resolution, 32, {})
    assert "a multiple of 64" in Q.check_value(height, 100, {})
    real = {"base_model": "model.safetensors", "architecture": "sd1"}
    assert Q.value_warnings({**real, "resolution": 256}) == [
        "resolution: 256 is below the 512x512 this architecture's models are made for: fine for quick tests "
        "and small models, blurry for real ones"]
    assert Q.value_warnings({**real, "resolution": 768, "height": 384}) == []     # a wide SD1 area
    assert "1024x1024" in Q.value_warnings({**real, "architecture": "sdxl", "resolution": 768})[0]
    assert Q.value_warnings({**real, "base_model": Q.BUILTIN_TINY, "resolution": 64}) == []


def test_mixed_precision_default_fits_the_machine(monkeypatch):
    from easytrain import machine

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU to see, whatever this machine has
    machine.has_cuda_gpu.cache_clear()
    machine.gpu_supports_bf16.cache_clear()
    try:
        assert not machine.has_cuda_gpu()
        assert Q.BY_ID["mixed_precision"].default_for({}) == "bf16"
    finally:
        machine.has_cuda_gpu.cache_clear()
        machine.gpu_supports_bf16.cache_clear()


def test_sdxl_defaults_come_from_the_catalog():
    from easytrain import questions as Q

    def default(key, arch):
        return Q.BY_ID[key].default_for({"architecture": arch})

    assert [default(k, "sdxl") for k in ("resolution", "min_bucket_reso", "max_bucket_reso", "train_parts")] == \
        [1024, 512, 2048, "unet_only"]
    assert [default(k, "sdxl-v") for k in ("resolution", "train_parts")] == [1024, "unet_only"]
    assert [default(k, "sd1") for k in ("resolution", "min_bucket_reso", "max_bucket_reso", "train_parts")] == \
        [512, 256, 1024, "both"]


def test_auto_architecture_takes_the_detected_models_defaults(tmp_path):
    """A file that leaves the architecture out gets its model's defaults, not SD1's."""
    import shutil

    from easytrain import answers as answers_file
    from easytrain.families.sdxl.tiny import tiny_sdxl_paths

    (tmp_path / "img" / "5_x").mkdir(parents=True)
    model = tmp_path / "models" / "xl.safetensors"
    model.parent.mkdir()
    shutil.copy(tiny_sdxl_paths().single_file, model)
    data = {"schema_version": 1, "base_model": "models/xl.safetensors", "image_folder": "img"}
    answers = answers_file.from_dict(data, source=tmp_path / "answers.json")
    assert answers.architecture == "auto"
    assert (answers.resolution, answers.train_parts, answers.min_bucket_reso) == (1024, "unet_only", 512)
    assert (answers.unet_lr, answers.shuffle_captions) == (2e-4, False)
    assert "realistic_model" not in answers  # it only sets the clip skip, which SDXL does not use
    assert Q.architecture_of({"base_model": "builtin:tiny"}) == "sd1"
    assert Q.architecture_of({"base_model": "missing.safetensors"}) is None
    sd1 = answers_file.from_dict({**data, "architecture": "sd1"}, source=tmp_path / "answers.json")
    assert (sd1.resolution, sd1.train_parts, sd1.unet_lr, sd1.shuffle_captions) == (512, "both", 5e-4, True)
