"""Shared pieces for the trainer tests: a tiny solid-colour dataset and answers for it."""

from __future__ import annotations

from pathlib import Path

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 210, 30)}


def make_colour_dataset(root: Path, size: int = 256, repeats: int = 1) -> Path:
    """Four solid-colour images with captions in ``root/<repeats>_colours``; returns ``root``."""
    from PIL import Image

    folder = Path(root) / f"{repeats}_colours"
    folder.mkdir(parents=True, exist_ok=True)
    for name, rgb in COLOURS.items():
        Image.new("RGB", (size, size), rgb).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"colours, {name} square\n", encoding="utf-8")
    return Path(root)


def tiny_answers(tmp_path: Path, **overrides):
    """Valid answers for a short CPU run of the embedded tiny model on the colour dataset.

    The images are 64 px and bucket_no_upscale keeps them so (8x8 latents): fast on a CPU.
    """
    from easytrain import answers as answers_file

    images = make_colour_dataset(tmp_path / "images", size=64)
    data = {
        "schema_version": 1,
        "base_model": "builtin:tiny",
        "architecture": "sd1",
        "image_folder": str(images),
        "output_folder": str(tmp_path / "out"),
        "output_name": "tiny",
        "optimizer": "AdamW",
        "network_dim": 4,
        "network_alpha": 4.0,
        "unet_lr": 1e-3,
        "text_encoder_lr": 1e-4,
        "scheduler": "constant",
        "resolution": 256,
        "batch_size": 2,
        "epochs": 2,
        "save_every_n_epochs": 1,
        "mixed_precision": "no",
        "cache_latents": "memory",
        "bucket_no_upscale": True,
    }
    data.update(overrides)
    return answers_file.from_dict(data, source=tmp_path / "answers.json")


def tiny_plan(tmp_path: Path, **overrides):
    from easytrain.plan import TrainPlan

    return TrainPlan.from_answers(tiny_answers(tmp_path, **overrides))


class Recorder(list):
    """A sink that keeps every event."""

    def __call__(self, event) -> None:
        self.append(event)

    def of(self, kind) -> list:
        return [e for e in self if isinstance(e, kind)]


def fast_plan(tmp_path: Path, **overrides):
    """A plan at 64 px (the smallest size allowed, for speed): 4 images x 4 repeats, batch 4."""
    from easytrain import answers as answers_file
    from easytrain import questions as Q
    from easytrain.plan import TrainPlan

    images = make_colour_dataset(tmp_path / "images", size=64, repeats=4)
    data = dict(
        base_model="builtin:tiny", architecture="sd1", image_folder=str(images),
        output_folder=str(tmp_path / "out"), output_name="fast", optimizer="AdamW",
        network_dim=8, network_alpha=8.0, unet_lr=1e-2, text_encoder_lr=0.0, scheduler="constant",
        resolution=64, min_bucket_reso=64, max_bucket_reso=128, batch_size=4, epochs=6,
        save_every_n_epochs=0, mixed_precision="no", cache_latents="memory", gradient_checkpointing=False,
        max_token_length=75, min_snr_gamma=0.0, tag_summary="none", seed=1,
    )
    data.update(overrides)
    return TrainPlan.from_answers(answers_file.Answers(Q.applicable_values(data)))
