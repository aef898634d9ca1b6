"""Helpers for the dataset-preparation tool tests: datasets in tmp folders, tree hashes,
a tiny WD14-style ONNX tagger built in code, and running the CLI as a subprocess."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]

# name, category, how its probability is made: ("B"|"G"|"R", weight) = channel mean / 255, or a constant
TAGGER_TAGS = [
    ("blue_thing", 0, "B"),
    ("green_thing", 0, "G"),
    ("red_thing", 0, "R"),
    ("red_hero_(game)", 4, "R"),  # a character
    ("general", 9, 1.0),  # a rating: never written
    ("long_hair", 0, 0.5),
    ("^_^", 0, 0.9),
    ("faint_tag", 0, 0.2),
    ("side_character", 4, 0.8),  # under the character threshold 0.85
]


def write_captioned(folder: Path, name: str, caption: str | bytes, size=(64, 64), colour=(200, 30, 30)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / f"{name}.png"
    Image.new("RGB", size, colour).save(image)
    if caption is not None:
        data = caption if isinstance(caption, bytes) else caption.encode("utf-8")
        (folder / f"{name}.txt").write_bytes(data)
    return image


def make_caption_dataset(root: Path) -> Path:
    """root/10_alice and root/3_style with captions covering every edit."""
    alice = root / "10_alice"
    write_captioned(alice, "a1", "alice, 1girl, long_hair, smile, ^_^, smile")
    write_captioned(alice, "a2", "alice, 1girl, blonde hair, >_<, blue_eyes")
    write_captioned(alice, "a3", "1girl,  long_hair , yellow hair, o_o\nsecond line stays\n")
    write_captioned(alice, "a4", b"\xef\xbb\xbfalice, 1girl, x_x, 0_0\r\n")
    write_captioned(alice, "a5", None)
    style = root / "3_style"
    write_captioned(style, "s1", "1girl, outdoors, sky, long_hair")
    write_captioned(style, "s2", "scenery, 1girl, sky")
    return root


def tree_digest(root: Path, skip_tools_dir: bool = False) -> dict[str, str]:
    """{relative path: sha256} of every file under root."""
    digest = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip_tools_dir and ".easytrain" in dirnames:
            dirnames.remove(".easytrain")
        for name in filenames:
            path = Path(dirpath) / name
            digest[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def all_file_hashes(root: Path) -> list[str]:
    """Every file's content hash anywhere under root (undo and _excluded folders included, the undo
    records themselves left out), sorted: equal lists mean nothing was lost or added."""
    return sorted(digest for name, digest in tree_digest(root).items()
                  if not (name.startswith(".easytrain/") and name.endswith("/manifest.json")))


def run_cli(*args, cwd: Path | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "easytrain", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or REPO, env=env)


def assert_clean_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    assert result.stderr.startswith("easytrain: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def shape_picture(seed: int, size=(256, 256)) -> Image.Image:
    """A picture with some structure (background gradient, a few shapes), different for each seed."""
    rng = random.Random(seed)
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    top = tuple(rng.randint(0, 255) for _ in range(3))
    bottom = tuple(rng.randint(0, 255) for _ in range(3))
    for y in range(size[1]):
        t = y / max(1, size[1] - 1)
        draw.line([(0, y), (size[0], y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    low = max(2, min(size) // 8)
    for _ in range(4):
        x0, y0 = rng.randint(0, size[0] - low), rng.randint(0, size[1] - low)
        x1, y1 = x0 + rng.randint(low, max(low, size[0] // 2)), y0 + rng.randint(low, max(low, size[1] // 2))
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return image


def build_tiny_tagger(folder: Path, size: int = 32, dynamic_batch: bool = True, with_csv: bool = True) -> Path:
    """model.onnx + selected_tags.csv: probabilities from the BGR channel means, or constants.

    input: NHWC float32 BGR 0-255; output: sigmoid-free probabilities, one per CSV row.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    n = len(TAGGER_TAGS)
    weights = np.zeros((3, n), dtype=np.float32)
    bias = np.zeros((n,), dtype=np.float32)
    for column, (_name, _category, source) in enumerate(TAGGER_TAGS):
        if isinstance(source, str):
            weights["BGR".index(source), column] = 1.0 / 255.0
        else:
            bias[column] = source
    batch = "N" if dynamic_batch else 1
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input_1"], ["means"], axes=[1, 2], keepdims=0),
         helper.make_node("MatMul", ["means", "weights"], ["scaled"]),
         helper.make_node("Add", ["scaled", "bias"], ["predictions_sigmoid"])],
        "tiny_tagger",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch, n])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    if with_csv:
        lines = ["tag_id,name,category,count"]
        lines += [f"{1000 + i},{name},{category},{100 - i}" for i, (name, category, _s) in enumerate(TAGGER_TAGS)]
        (folder / "selected_tags.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
