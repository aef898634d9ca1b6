"""The seam: one catalog of names, one package per family (families/), the plan as the only settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from safetensors import safe_open

from _train_helpers import Recorder, make_colour_dataset, tiny_answers

from easytrain import catalog
from easytrain import questions as Q

PACKAGE = Path(__file__).resolve().parents[1] / "easytrain"
FAMILIES = PACKAGE / "families"
ARCH_IDS = "|".join(re.escape(a) for a in catalog.ARCHITECTURE_IDS)
# A comparison with an architecture id, or a table keyed by one: what only the families and the catalog may do.
ARCH_COMPARISON = re.compile(
    rf"""(==|!=)\s*["']({ARCH_IDS})["']"""
    rf"""|["']({ARCH_IDS})["']\s*(==|!=)"""
    rf"""|\bin\s*[(\[{{]\s*["']({ARCH_IDS})["']"""
    rf"""|startswith\(\s*["']sd"""
    rf"""|[{{,]\s*["']({ARCH_IDS})["']\s*:"""
)
# Any name of a family: an architecture id, a family id, a block layout, a shipped config folder.
FAMILY_NAMES = sorted({*catalog.ARCHITECTURE_IDS, *(a.family for a in catalog.ARCHITECTURES.values()),
                       *catalog.BLOCK_LAYOUTS}, key=len, reverse=True)
NAMES_A_FAMILY = re.compile(r"""["'](%s)["']""" % "|".join(map(re.escape, FAMILY_NAMES)))
# A prediction type, which only a family's objective (and the catalog's data) may branch on.
PREDICTION_TYPE = re.compile(r"""["'](epsilon|v_prediction|v-prediction|flow)["']""")
ALLOWED = {PACKAGE / "catalog.py"}


def _code_lines(path: Path):
    """(number, code) of every line, comments cut off."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        yield number, line.split("#")[0]


def _outside_the_families():
    return [path for path in sorted(PACKAGE.rglob("*.py")) if path not in ALLOWED and FAMILIES not in path.parents]


def test_no_module_outside_the_families_compares_architecture_names():
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{number}: {code.strip()}"
                 for path in _outside_the_families() for number, code in _code_lines(path)
                 if ARCH_COMPARISON.search(code)]
    assert offenders == []


def test_no_module_outside_the_families_names_a_family_its_configs_or_a_prediction_type():
    """Adding a family is one folder and one registry line: nothing else may know the ones there are."""
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{number}: {code.strip()}"
                 for path in _outside_the_families() for number, code in _code_lines(path)
                 if NAMES_A_FAMILY.search(code) or PREDICTION_TYPE.search(code)]
    assert offenders == []


def test_the_grep_catches_what_it_is_for():
    for line in ('if arch == "sdxl":', "x = {'sd1': 1}", 'arch in ("sd2", "sd2-v")', 'a.startswith("sd2")',
                 '"sd1" != arch'):
        assert ARCH_COMPARISON.search(line), line
    assert not ARCH_COMPARISON.search('Detection("sd1", "epsilon", True)')
    for line in ('MEMORY = {"sdxl": entry}', 'LAYOUTS["sd"]', 'CONFIG_ROOT / "sd2-v"', 'make("sdxl")'):
        assert NAMES_A_FAMILY.search(line), line
    for line in ('if prediction_type == "v_prediction":', 'target = "epsilon"'):
        assert PREDICTION_TYPE.search(line), line
    assert not NAMES_A_FAMILY.search('answers.get("v_parameterization")')
    assert not PREDICTION_TYPE.search('"prediction_type"')


def test_the_memory_table_and_the_block_layouts_come_from_the_families():
    from easytrain.families.registry import family_memory
    from easytrain.memory_estimate import MEMORY

    assert set(family_memory()) | {a.id for a in catalog.ARCHITECTURES.values() if a.same_models_as} == set(MEMORY)
    assert {a.block_layout for a in catalog.ARCHITECTURES.values()} == set(catalog.BLOCK_LAYOUTS)


def test_catalog_names_match_the_heavy_side_implementations():
    from easytrain.families.registry import registered_families
    from easytrain.network.spec import NETWORK_TYPES
    from easytrain.train.optimizers import OPTIMIZER_CLASSES
    from easytrain.train.schedulers import SCHEDULE_FUNCTIONS

    assert set(OPTIMIZER_CLASSES) == set(catalog.OPTIMIZERS)
    assert set(SCHEDULE_FUNCTIONS) == set(catalog.SCHEDULERS)
    assert NETWORK_TYPES == catalog.NETWORK_TYPES
    assert {a.block_layout for a in catalog.ARCHITECTURES.values()} <= set(catalog.BLOCK_LAYOUTS)
    families = {a.family for a in catalog.ARCHITECTURES.values()}
    assert set(registered_families()) <= families
    # Every family the catalog lists is either served by an adapter or refused with its label.
    from easytrain.families.registry import family_for
    from easytrain.errors import UserError

    for arch in catalog.ARCHITECTURE_IDS:
        if catalog.architecture(arch).family in registered_families():
            assert family_for(arch).family == catalog.architecture(arch).family
        else:
            with pytest.raises(UserError, match=catalog.architecture(arch).label):
                family_for(arch)


def test_the_question_table_offers_exactly_the_catalog():
    assert Q.question("optimizer").choice_values == catalog.OPTIMIZERS
    assert Q.question("network_type").choice_values == catalog.NETWORK_TYPES
    assert Q.question("scheduler").choice_values == catalog.SCHEDULERS
    assert Q.question("architecture").choice_values == (catalog.AUTO,) + catalog.ARCHITECTURE_IDS


def test_train_network_and_sampling_never_read_answers():
    """Nothing under train/, network/, sampling/ or families/ touches an Answers object or a raw key."""
    pattern = re.compile(r"\banswers\b\.(get|path|\w+)|plan\.answers|from easytrain\.answers|import answers")
    offenders = []
    for folder in ("train", "network", "sampling", "families", "data"):
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line.split("#")[0]):
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert offenders == []


def _toml_with_batch(tmp_path: Path, batch: int) -> Path:
    images = make_colour_dataset(tmp_path / "toml_images", size=64, repeats=3)
    toml = tmp_path / "dataset.toml"
    toml.write_text(f"""
[[datasets]]
resolution = 256
batch_size = {batch}
bucket_no_upscale = true

  [[datasets.subsets]]
  image_dir = "{(images / '3_colours').as_posix()}"
  num_repeats = 3
""", encoding="utf-8")
    return toml


def test_a_dataset_toml_batch_size_is_the_batch_of_the_plan_the_loop_and_the_metadata(tmp_path):
    """Answers say batch 2, the TOML says 4: every count, the batches and ss_batch_size use 4."""
    from easytrain.plan import TrainPlan
    from easytrain.train.loop import run_training
    from easytrain.train import events as ev

    toml = _toml_with_batch(tmp_path, 4)
    answers = tiny_answers(tmp_path, dataset_config=str(toml), batch_size=2, epochs=1, save_every_n_epochs=0,
                           save_state=False, train_parts="unet_only", text_encoder_lr=0.0)
    plan = TrainPlan.from_answers(answers)
    assert plan.data.batch_size == 4 and plan.steps_per_epoch == 3       # 12 images (4 x 3 repeats) / 4
    events = Recorder()
    result = run_training(plan, events)
    steps = events.of(ev.StepEnded)
    assert len(steps) == plan.total_steps == 3
    assert {s.images for s in steps} == {4}
    assert events.of(ev.RunStarted)[0].batch_size == 4
    with safe_open(str(result.final_path), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["ss_batch_size_per_device"] == "4"


def test_the_wizard_steps_line_counts_with_a_dataset_toml(tmp_path):
    from easytrain.tui.preview import StepsPreview

    toml = _toml_with_batch(tmp_path, 4)
    values = dict(Q.applicable_values({"image_folder": None, "dataset_config": str(toml), "batch_size": 2,
                                      "epochs": 5, "length_by": "epochs"}))
    values["dataset_config"] = str(toml)
    line = StepsPreview().line(values, tmp_path)
    assert line is not None and "/ batch 4 = 3 steps x 5 epochs = 15 steps" in line.text


def test_settings_defaults_come_from_the_questions(tmp_path):
    """An answers dict without the optional keys gets the questions' defaults in the plan's records."""
    from easytrain.answers import Answers
    from easytrain.plan import TrainPlan

    answers = tiny_answers(tmp_path)
    bare = {k: v for k, v in answers.values().items()
            if k in ("base_model", "architecture", "image_folder", "output_folder", "output_name", "scheduler",
                     "resolution", "epochs", "bucket_no_upscale")}
    plan = TrainPlan.from_answers(Answers(bare, source=answers.source))
    assert plan.data.cache_latents == Q.question("cache_latents").default == "memory"
    assert plan.loss.min_snr_gamma == Q.question("min_snr_gamma").default
    assert plan.run.seed == Q.question("seed").default
    assert plan.saving.keep_states == Q.question("keep_states").default
    assert plan.data.batch_size == Q.question("batch_size").default_for(plan.answers.values())
