"""Any answers file gives exit 0 or 2 and one clear message: never a traceback, never a hang."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from easytrain import answers as A
from easytrain import questions as Q
from easytrain.cli import main as cli_main
from easytrain.errors import UserError

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-10**30, max_value=10**30)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.sampled_from(["\x00", "\x1b]0;x\x07", "../..", "a" * 300]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6)
BASE = {"schema_version": 1, "base_model": "builtin:tiny", "image_folder": "images", "output_folder": "out",
        "resolution": 256, "min_bucket_reso": 64, "bucket_no_upscale": True, "epochs": 1}


def assert_clean_outcome(code: int, err: str) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err and "unexpected error" not in err, err
    assert "\x1b" not in err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from _train_helpers import make_colour_dataset

    root = tmp_path_factory.mktemp("bad_input")
    make_colour_dataset(root / "images", size=64, repeats=2)
    return root


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(Q.KEYS + ("schema_version", "unknown_key")), value=JSON_VALUES)
def test_any_json_value_for_any_key_gives_exit_0_or_2(folder, capsys, key, value):
    path = folder / "any.json"
    path.write_text(json.dumps({**BASE, key: value}), encoding="utf-8")
    code = cli_main(["check", str(path)])
    _, err = capsys.readouterr()
    assert_clean_outcome(code, err)


HOSTILE_FILES = [
    ('{"schema_version": 1, "network_dim": 8, "network_dim": 16}', "the key 'network_dim' is given twice"),
    ('{"schema_version": 1, "optimizer_args": {"eps": 1, "eps": 2}}', "the key 'eps' is given twice"),
    ("[" * 50000 + "]" * 50000, "nested too deeply"),
    ('{"schema_version": 1, "optimizer_args": {"a": [[[[[[[[1]]]]]]]]}}', "nested too deeply"),
    ('{"schema_version": 1, "network_dim": ' + "9" * 5000 + "}", "a number with thousands of digits"),
    ('{"schema_version": 1, "network_dim": 1' + "0" * 300 + "}", "network_dim: must be an integer from 1 to 1024"),
    ('{"schema_version": true}', "schema_version: this easytrain reads version 1"),
    ('{"schema_version": "1"}', "schema_version: this easytrain reads version 1"),
    ('{"schema_version": 1, "comment": "a\\u0000b"}', "comment: contains a NUL character"),
    ('{"schema_version": 1, "output_folder": "' + "a" * 5000 + '"}', "output_folder: cannot use this path"),
    ('{"schema_version": 1, "image_folder": "' + "a/" * 3000 + '"}', "image_folder: cannot use this path"),
    ('{"schema_version": 1, "output_name": ".."}', "output_name: must hold a letter or digit"),
    ('{"schema_version": 1, "output_name": "con"}', "reserved device name on Windows"),
    ('{"schema_version": 1, "output_name": "' + "n" * 201 + '"}', "output_name: must be at most 200 characters"),
]


@pytest.mark.parametrize("text, says", HOSTILE_FILES, ids=[says[:40] for _, says in HOSTILE_FILES])
def test_hostile_files_get_one_clear_message(tmp_path, capsys, text, says):
    path = tmp_path / "hostile.json"
    path.write_text(text, encoding="utf-8")
    code = cli_main(["check", str(path)])
    _, err = capsys.readouterr()
    assert_clean_outcome(code, err)
    assert code == 2 and says in err
    assert str(path) in err.splitlines()[0]


def test_a_million_unknown_keys_are_refused_quickly(tmp_path):
    path = tmp_path / "many.json"
    path.write_text(json.dumps({"schema_version": 1, **{f"key{i}": i for i in range(1_000_000)}}))
    started = time.process_time()   # CPU time: the machine may be shared
    with pytest.raises(A.AnswersError) as err:
        A.load(path)
    assert time.process_time() - started < 10
    assert "... and 999980 more unknown keys" in err.value.problems
    assert len(err.value.problems) < 30


def test_whole_floats_are_integers_everywhere(tmp_path, demo_images):
    from easytrain.plan import TrainPlan

    path = tmp_path / "floats.json"
    path.write_text(json.dumps({"schema_version": 1, "base_model": "builtin:tiny", "image_folder": "images",
                                "network_dim": 16.0, "epochs": 3.0, "save_every_n_epochs": 1.0,
                                "batch_size": 2.0, "resolution": 512.0}))
    answers = A.load(path)
    assert answers.network_dim == 16 and type(answers.network_dim) is int
    plan = TrainPlan.from_answers(answers)
    assert plan.epochs == 3 and plan.data.batch_size == 2 and plan.resolution == (512, 512)
    assert '"network_dim": 16,' in A.dumps(answers) and '"epochs": 3,' in A.dumps(answers)
    with pytest.raises(UserError, match="network_dim: must be an integer"):
        A.from_dict({"schema_version": 1, "base_model": "builtin:tiny", "image_folder": "x", "network_dim": 16.5},
                    check_paths=False)


def test_check_refuses_optimizer_arguments_the_optimizer_would_refuse(tmp_path, capsys, demo_images):
    path = tmp_path / "opt.json"
    path.write_text(json.dumps({"schema_version": 1, "base_model": "builtin:tiny", "image_folder": "images",
                                "optimizer": "AdamW", "optimizer_args": {"betas": [0.9], "momentum": 0.9}}))
    code = cli_main(["check", str(path)])
    _, err = capsys.readouterr()
    assert code == 2 and "optimizer_args: AdamW has no argument 'momentum'; AdamW accepts: betas" in err


def _valid_values(q: Q.Question):
    """Values inside the question's own rules (the cross-key rules are what the test probes)."""
    if q.kind == "yesno":
        return st.booleans()
    if q.kind == "choice":
        return st.sampled_from(q.choice_values)
    if q.kind == "int":
        step = q.multiple_of or 1
        low = int(q.minimum if q.minimum is not None else 0)
        high = min(int(q.maximum if q.maximum is not None else 4096), low + 64 * step)
        return st.integers(-(-low // step), high // step).map(lambda n: n * step)
    low = q.minimum if q.minimum is not None else 0.0
    high = q.maximum if q.maximum is not None else 10.0
    return st.floats(low, high, exclude_min=q.above is not None)


VARIED = [q for q in Q.QUESTIONS if q.kind in ("yesno", "choice", "int", "float")
          and q.id not in ("architecture", "sample_images", "log_every_n_steps")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_what_check_accepts_gets_past_every_step_of_train_before_the_model_loads(folder, capsys, data):
    from easytrain.commands.check import plan_lines
    from easytrain.commands.train import keep_earlier_outputs, prepare
    from easytrain.run_files import write_run_files

    chosen = data.draw(st.lists(st.sampled_from(VARIED), max_size=6, unique_by=lambda q: q.id))
    answers = {**BASE, "output_folder": "out_any", **{q.id: data.draw(_valid_values(q), label=q.id) for q in chosen}}
    path = folder / "accepted.json"
    path.write_text(json.dumps(answers), encoding="utf-8")
    code = cli_main(["check", str(path)])
    _, err = capsys.readouterr()
    assert_clean_outcome(code, err)
    if code != 0:
        return
    _, plan = prepare(str(path))      # train's own pre-load steps, in its order
    plan_lines(plan)
    keep_earlier_outputs(plan, str(path), resume=None)
    write_run_files(plan)


def test_a_resume_state_that_is_not_a_folder_is_refused_before_anything_loads(tmp_path, capsys):
    answers = tmp_path / "a.json"
    answers.write_text("{}")
    for state, says in (("a" * 5000, "--resume: cannot use this path (File name too long)"),
                        (str(tmp_path / "nowhere"), "is not a folder")):
        assert cli_main(["train", str(answers), "--resume", state]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err
