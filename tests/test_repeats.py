"""Suggested repeats and epochs, and the answers' per-folder repeats override, on generated folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from easytrain import answers as A
from easytrain.data.buckets import BucketSettings
from easytrain.data.scan import scan_image_folder
from easytrain.errors import UserError
from easytrain.plan import TrainPlan
from easytrain.repeats import TARGET_STEPS, suggest_for_plan, suggest_repeats
from tests._data_helpers import make_subset

SETTINGS = BucketSettings(resolution=(512, 512), enable_bucket=True, min_reso=256, max_reso=1024, step=64,
                          no_upscale=False)


def plan_for(tmp_path: Path, **answers) -> TrainPlan:
    data = {"schema_version": 1, "base_model": "builtin:tiny", "image_folder": "images", **answers}
    (tmp_path / "a.json").write_text(json.dumps(data))
    return TrainPlan.from_answers(A.load(tmp_path / "a.json"))


@pytest.mark.parametrize("images,repeats,steps", [(20, 10, 1000), (100, 3, 1500), (400, 1, 2000)])
def test_one_folder_gets_the_guides_repeats(tmp_path, images, repeats, steps):
    make_subset(tmp_path / "images", "1_mychar", images)
    scan = scan_image_folder(tmp_path / "images")
    suggestion = suggest_repeats(scan, None, SETTINGS, 2, epochs_now=10)
    assert [f.repeats for f in suggestion.folders] == [repeats]
    assert suggestion.epochs == 10 and suggestion.steps.total_steps == steps
    assert suggestion.folders[0].renamed == f"{repeats}_mychar"


def test_folders_of_different_sizes_get_a_similar_share(tmp_path):
    make_subset(tmp_path / "images", "1_char", 10)
    make_subset(tmp_path / "images", "1_outfit", 40)
    scan = scan_image_folder(tmp_path / "images")
    suggestion = suggest_repeats(scan, None, SETTINGS, 2, epochs_now=10)
    by_name = {f.folder: f for f in suggestion.folders}
    assert by_name["1_char"].repeats == 4 * by_name["1_outfit"].repeats  # 10 x 12 = 40 x 3
    shares = [f.images * f.repeats for f in suggestion.folders]
    assert shares[0] == shares[1]
    assert TARGET_STEPS[0] <= suggestion.steps.total_steps <= TARGET_STEPS[1]


def test_epochs_move_into_the_target_when_repeats_alone_cannot(tmp_path):
    make_subset(tmp_path / "images", "1_big", 2000)  # 1000 steps per epoch at batch 2, 1 repeat
    scan = scan_image_folder(tmp_path / "images")
    suggestion = suggest_repeats(scan, None, SETTINGS, 2, epochs_now=10)
    assert [f.repeats for f in suggestion.folders] == [1]
    assert suggestion.epochs == 3 and suggestion.steps.total_steps == 3000
    assert suggestion.steps_now.total_steps == 10000 and suggestion.changes_anything


def test_override_reaches_the_plan_and_the_suggestion_reads_it(tmp_path):
    make_subset(tmp_path / "images", "5_shapes", 20)
    plain = plan_for(tmp_path)
    assert plain.images_per_epoch == 100 and plain.total_steps == 500
    plan = plan_for(tmp_path, folder_repeats={"5_shapes": 10})
    assert plan.train_scan.subsets[0].repeats == 10
    assert plan.images_per_epoch == 200 and plan.total_steps == 1000
    assert plan.to_dict()["datasets"][0]["repeats"] == 10
    suggestion = suggest_for_plan(plan)
    assert suggestion.folders[0].repeats_now == 10 and not suggestion.changes_anything


def test_override_of_a_folder_that_is_not_there_names_the_key_and_the_folders(tmp_path):
    make_subset(tmp_path / "images", "5_shapes", 4)
    with pytest.raises(UserError) as err:
        plan_for(tmp_path, folder_repeats={"10_shapes": 3})
    message = str(err.value)
    assert message.startswith("folder_repeats: no folder '10_shapes' in ")
    assert "'5_shapes'" in message


@pytest.mark.parametrize("value,shown", [({"5_shapes": 0}, "0"), ({"5_shapes": "lots"}, "'lots'"),
                                         ({"5_shapes": 2.5}, "2.5")])
def test_bad_override_values_are_refused_with_the_key(tmp_path, value, shown):
    make_subset(tmp_path / "images", "5_shapes", 4)
    with pytest.raises(A.AnswersError) as err:
        plan_for(tmp_path, folder_repeats=value)
    assert err.value.problems == [
        f"folder_repeats: repeats of '5_shapes' must be an integer from 1 to 10000, got {shown}"]
