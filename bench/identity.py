"""Same answers and seed, same LoRA: a digest of what `easytrain train` writes on the tiny model.

    .venv/bin/python bench/identity.py [--sdxl] [--keep DIR]

Trains a fixed copy of the demo answers (2 epochs, 256 px, LoCon so conv modules are
included, text encoder trained, min-SNR) through the CLI and prints one sha256 per saved
file: the tensor bytes after the header plus the metadata without the keys that hold the
wall-clock time (ss_training_started_at, ss_training_finished_at, modelspec.date, ss_session_id).
With --sdxl the same answers train the tiny SDXL-shaped model (its single file), UNet and both
text encoders, LoRA.
Run it before and after a refactor: the digests must be equal. Recorded digests live in
docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VOLATILE = {"ss_training_started_at", "ss_training_finished_at", "modelspec.date", "ss_session_id"}


def answers(folder: Path, sdxl: bool = False) -> dict:
    demo = json.loads((REPO / "answers" / "demo.json").read_text(encoding="utf-8"))
    demo.update({
        "image_folder": str((REPO / "answers" / "demo" / "images").resolve()),
        "output_folder": str(folder / "out"), "output_name": "identity",
        "network_type": "LoCon", "conv_dim": 4, "conv_alpha": 2.0,
        "epochs": 2, "resolution": 256, "bucket_no_upscale": True, "batch_size": 2,
        "length_by": "epochs", "save_every_n_epochs": 1, "sample_images": False,
        "shuffle_captions": False, "min_snr_gamma": 5.0, "seed": 1234,
    })
    if sdxl:
        demo.update({"base_model": str(tiny_sdxl_file()), "architecture": "sdxl", "network_type": "LoRA",
                     "train_parts": "both", "text_encoder_lr": 1e-4})
        del demo["conv_dim"], demo["conv_alpha"]
    return demo


def tiny_sdxl_file() -> Path:
    code = ("from easytrain.families.sdxl.tiny import tiny_sdxl_paths\n"
            "print(tiny_sdxl_paths().single_file)")
    run = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, check=True)
    return Path(run.stdout.strip().splitlines()[-1])


def digest(path: Path) -> str:
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    metadata = {k: v for k, v in header.pop("__metadata__", {}).items() if k not in VOLATILE}
    h = hashlib.sha256()
    h.update(json.dumps(header, sort_keys=True).encode())
    h.update(json.dumps(metadata, sort_keys=True).encode())
    h.update(data[8 + size:])
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="train into this folder and keep it")
    parser.add_argument("--sdxl", action="store_true", help="train the tiny SDXL-shaped model instead")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="easytrain-identity-"))
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "identity.json"
    file.write_text(json.dumps(answers(folder, args.sdxl), indent=2), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO), EASYTRAIN_PLAIN="1")
    run = subprocess.run([sys.executable, "-m", "easytrain.cli", "train", str(file)], env=env,
                         capture_output=True, text=True)
    if run.returncode != 0:
        print(run.stdout[-3000:], run.stderr[-3000:])
        return run.returncode
    for path in sorted((folder / "out").glob("*.safetensors")):
        print(f"{path.name}  {digest(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
