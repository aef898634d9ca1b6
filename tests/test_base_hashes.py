"""The base model's hashes: hashed on a thread, remembered per file, and written as kohya writes them."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from easytrain.network import base_hashes
from easytrain.network.base_hashes import CACHE_FILE, base_model_hashes, hashes_in_background, remembered_hashes


def _model(tmp_path, fill: int = 7):
    path = tmp_path / "base.safetensors"
    path.write_bytes(bytes([fill]) * (0x110000 + 123))
    return path


def _expected(path):
    data = path.read_bytes()
    return {"ss_sd_model_hash": hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8],
            "ss_new_sd_model_hash": hashlib.sha256(data).hexdigest()}


def test_the_second_call_reads_the_cache_not_the_file(tmp_path, monkeypatch):
    model, cache = _model(tmp_path), tmp_path / "cache"
    assert remembered_hashes(model, cache) == _expected(model)
    assert json.loads((cache / CACHE_FILE).read_text())[str(model.resolve())]["hashes"] == _expected(model)

    def no_reading(path):
        raise AssertionError("hashed again although the file is unchanged")

    monkeypatch.setattr(base_hashes, "base_model_hashes", no_reading)
    assert remembered_hashes(model, cache) == _expected(model)


def test_a_changed_file_is_hashed_again(tmp_path):
    model, cache = _model(tmp_path), tmp_path / "cache"
    remembered_hashes(model, cache)
    model.write_bytes(bytes([9]) * (0x110000 + 123))  # same size, new contents and modification time
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 10**9))
    assert remembered_hashes(model, cache) == _expected(model)


@pytest.mark.parametrize("contents", ["not json", "[1, 2]", '{"%s": {"size": 1}}', '{"%s": "x"}'])
def test_a_broken_cache_file_only_costs_a_new_hash(tmp_path, contents):
    model, cache = _model(tmp_path), tmp_path / "cache"
    cache.mkdir()
    (cache / CACHE_FILE).write_text(contents.replace("%s", str(model.resolve())) if "%s" in contents else contents)
    assert remembered_hashes(model, cache) == _expected(model)
    assert remembered_hashes(model, cache) == _expected(model)


def test_a_cache_folder_that_cannot_be_written_still_gives_the_hashes(tmp_path):
    model = _model(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder would be")
    assert remembered_hashes(model, blocker / "cache") == _expected(model)


def test_a_folder_or_builtin_model_has_no_hashes(tmp_path):
    assert remembered_hashes(tmp_path, tmp_path / "cache") == {}
    assert base_model_hashes("builtin:tiny") == {}


def test_the_background_hash_gives_the_result_or_raises_in_the_caller(tmp_path, monkeypatch):
    model = _model(tmp_path)
    assert hashes_in_background(model)() == _expected(model)

    def unreadable(path, cache_dir=None, before_reading=None):
        raise OSError("disk gone")

    monkeypatch.setattr(base_hashes, "remembered_hashes", unreadable)
    assert hashes_in_background(model)() == {}  # the LoRA file is saved, without the two hashes

    def bug(path, cache_dir=None, before_reading=None):
        raise ValueError("a bug")

    monkeypatch.setattr(base_hashes, "remembered_hashes", bug)
    wait = hashes_in_background(model)
    with pytest.raises(ValueError, match="a bug"):
        wait()


def test_the_background_hash_reads_the_file_only_after_what_it_is_told_to_wait_for(tmp_path, monkeypatch):
    """The early conversion's helper needs the idle core first; a hash already remembered waits for nothing."""
    import threading

    model, cache = _model(tmp_path), tmp_path / "cache"
    monkeypatch.setattr(base_hashes, "default_cache_dir", lambda: cache)
    released, read = threading.Event(), []
    real = base_hashes.base_model_hashes
    monkeypatch.setattr(base_hashes, "base_model_hashes", lambda path: read.append(path) or real(path))
    wait = hashes_in_background(model, after=lambda: released.wait(timeout=60))
    time.sleep(0.2)
    assert read == []
    released.set()
    assert wait() == _expected(model) and len(read) == 1

    never = threading.Event()
    assert hashes_in_background(model, after=lambda: never.wait(timeout=60))() == _expected(model)  # remembered
    assert len(read) == 1


def test_the_saved_lora_carries_the_base_files_hashes(tmp_path):
    """A run on a base model file writes both hashes of that file into every LoRA file, as kohya does
    (hashed on a thread while the run loads, waited for at the first save)."""
    from safetensors import safe_open

    from _train_helpers import Recorder, tiny_plan
    from easytrain.families.sd.tiny import tiny_model_paths
    from easytrain.train.loop import run_training

    model = tiny_model_paths().single_file
    plan = tiny_plan(tmp_path, base_model=str(model), epochs=1, save_every_n_epochs=1)
    result = run_training(plan, Recorder())
    with safe_open(str(result.final_path), "pt") as handle:
        metadata = handle.metadata()
    assert {k: metadata[k] for k in _expected(model)} == _expected(model)
