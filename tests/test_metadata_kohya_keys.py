"""The rest of kohya's ss_* keys: the new options, hashes, session, bucket info, ss_datasets, DoRA."""

from __future__ import annotations

import hashlib
import json

import pytest

from easytrain.data.buckets import BucketSettings, make_buckets
from easytrain.data.kohya_metadata import bucket_info, datasets_entry, reg_dataset_dirs
from easytrain.data.scan import scan_image_folder
from easytrain.network.base_hashes import base_model_hashes
from easytrain.network.metadata import build_metadata, network_args, new_session_id
from easytrain.network.spec import NetworkSpec
from tests._data_helpers import make_subset

# Keys sd-scripts' train_network.py writes that have a meaning in easytrain (the others: validation,
# fp8, lowram, VAE override, face crop, weight-norm scaling, random-strength noise, resize interpolation,
# the sd-scripts commit: features easytrain does not have).
KOHYA_KEYS = """ss_session_id ss_training_started_at ss_output_name ss_learning_rate ss_text_encoder_lr ss_unet_lr
ss_num_train_images ss_num_reg_images ss_num_batches_per_epoch ss_num_epochs ss_gradient_checkpointing
ss_gradient_accumulation_steps ss_max_train_steps ss_lr_warmup_steps ss_lr_scheduler ss_network_module
ss_network_dim ss_network_alpha ss_mixed_precision ss_full_fp16 ss_v2 ss_base_model_version ss_clip_skip
ss_max_token_length ss_cache_latents ss_seed ss_noise_offset ss_multires_noise_iterations
ss_multires_noise_discount ss_adaptive_noise_scale ss_zero_terminal_snr ss_training_comment ss_optimizer
ss_max_grad_norm ss_caption_dropout_rate ss_caption_dropout_every_n_epochs ss_caption_tag_dropout_rate
ss_prior_loss_weight ss_min_snr_gamma ss_ip_noise_gamma ss_debiased_estimation ss_loss_type ss_huber_schedule
ss_huber_scale ss_huber_c ss_batch_size_per_device ss_total_batch_size ss_resolution ss_color_aug ss_flip_aug
ss_random_crop ss_shuffle_caption ss_enable_bucket ss_bucket_no_upscale ss_min_bucket_reso ss_max_bucket_reso
ss_keep_tokens ss_dataset_dirs ss_reg_dataset_dirs ss_tag_frequency ss_bucket_info ss_network_args
ss_sd_model_hash ss_new_sd_model_hash ss_sd_model_name ss_training_finished_at ss_steps ss_epoch
ss_datasets""".split()


def test_every_meaningful_kohya_key_is_written_in_kohyas_format(tmp_path):
    model = tmp_path / "base.safetensors"
    model.write_bytes(bytes(range(256)) * 5000)                    # 1.28 MB: past the 1 MiB legacy window
    hashes = base_model_hashes(model)
    data = model.read_bytes()
    assert hashes == {"ss_sd_model_hash": hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8],
                      "ss_new_sd_model_hash": hashlib.sha256(data).hexdigest()}
    assert base_model_hashes(tmp_path) == {}                        # a diffusers folder: no hash, as kohya
    meta = build_metadata(
        spec=NetworkSpec("LoCon", dim=8, alpha=4.0, conv_dim=4, conv_alpha=2.0), output_name="x",
        session_id=123, training_started_at=1.5, training_finished_at=9.25, learning_rate=1e-4, unet_lr=1e-4,
        text_encoder_lr=5e-5, num_train_images=10, num_reg_images=0, num_batches_per_epoch=5, num_epochs=2,
        gradient_checkpointing=True, gradient_accumulation_steps=4, max_train_steps=10, lr_warmup_steps=1,
        lr_scheduler="cosine", mixed_precision="bf16", full_fp16=False, clip_skip=2, max_token_length=225,
        cache_latents=False, seed=1, noise_offset=0.05, multires_noise_iterations=6, multires_noise_discount=0.3,
        adaptive_noise_scale=0.01, zero_terminal_snr=True, comment="c", optimizer="AdamW", max_grad_norm=1.0,
        caption_dropout_rate=0.1, caption_dropout_every_n_epochs=3, caption_tag_dropout_rate=0.2,
        prior_loss_weight=1.0, min_snr_gamma=5.0, ip_noise_gamma=0.1, debiased_estimation=True, loss_type="huber",
        huber_schedule="snr", huber_scale=1.0, huber_c=0.1, batch_size=2, total_batch_size=8, resolution=512,
        color_aug=True, flip_aug=False, random_crop=True, shuffle_caption=True, enable_bucket=True,
        bucket_no_upscale=False, min_bucket_reso=256, max_bucket_reso=1024, keep_tokens=1,
        dataset_dirs={"5_x": {"n_repeats": 5, "img_count": 2}}, reg_dataset_dirs={}, tag_frequency={},
        bucket_info={"buckets": {}, "mean_img_ar_error": 0}, sd_model_name="base.safetensors",
        base_model_hashes=hashes, steps=10, epoch=2, datasets=[{"is_dreambooth": True}],
    )
    assert sorted(set(KOHYA_KEYS) - set(meta)) == []
    assert {k: meta[k] for k in ("ss_gradient_accumulation_steps", "ss_total_batch_size", "ss_zero_terminal_snr",
                                 "ss_debiased_estimation", "ss_loss_type", "ss_huber_c", "ss_caption_dropout_rate",
                                 "ss_random_crop", "ss_training_finished_at", "ss_session_id",
                                 "ss_multires_noise_discount", "ss_full_fp16")} == {
        "ss_gradient_accumulation_steps": "4", "ss_total_batch_size": "8", "ss_zero_terminal_snr": "True",
        "ss_debiased_estimation": "True", "ss_loss_type": "huber", "ss_huber_c": "0.1",
        "ss_caption_dropout_rate": "0.1", "ss_random_crop": "True", "ss_training_finished_at": "9.25",
        "ss_session_id": "123", "ss_multires_noise_discount": "0.3", "ss_full_fp16": "False"}
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "2.0"}
    assert json.loads(meta["ss_reg_dataset_dirs"]) == {}
    assert 0 <= new_session_id() <= 2 ** 32


def test_dora_is_recorded_as_lycoris_with_dora_wd():
    spec = NetworkSpec("LoCon", dim=8, alpha=4.0, conv_dim=4, conv_alpha=2.0, dora=True)
    meta = build_metadata(spec=spec, output_name="x")
    assert meta["ss_network_module"] == "lycoris.kohya"
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "2.0", "algo": "locon",
                                                   "dora_wd": "True"}
    assert network_args(NetworkSpec("LoRA", dim=8, alpha=4.0, dora=True))["algo"] == "lora"


def test_bucket_info_and_datasets_as_kohya_writes_them(tmp_path):
    make_subset(tmp_path / "train", "3_wide", 2, size=(160, 64))
    make_subset(tmp_path / "train", "2_square", 1, size=(64, 64))
    make_subset(tmp_path / "reg", "1_person", 2, size=(64, 64), caption="person")
    train, reg = scan_image_folder(tmp_path / "train"), scan_image_folder(tmp_path / "reg", is_reg=True)
    settings = BucketSettings((64, 64), min_reso=32, max_reso=128, step=32)
    info = bucket_info(train, reg, settings)
    counts = {tuple(b["resolution"]): b["count"] for b in info["buckets"].values()}
    assert counts == {(96, 32): 6, (64, 64): 2 + 8}                  # repeats in, reg balanced to 8 images
    order = make_buckets(settings)
    assert {i: tuple(b["resolution"]) for i, b in info["buckets"].items()} == {
        order.index(size): size for size in counts}
    assert info["mean_img_ar_error"] == pytest.approx((2 * abs(3 - 2.5) + 3 * 0) / 5)
    assert bucket_info(train, None, BucketSettings((64, 64), enable_bucket=False)) is None
    assert reg_dataset_dirs(reg) == {"1_person": {"n_repeats": 1, "img_count": 2}}
    entry, = datasets_entry(train, reg, settings, batch_size=2, subset_defaults={"keep_tokens": 1, "flip_aug": True})
    assert entry["num_train_images"] == 8 and entry["num_reg_images"] == 8
    assert [s["image_dir"] for s in entry["subsets"]] == ["2_square", "3_wide", "1_person"]
    assert entry["subsets"][0]["keep_tokens"] == 1 and entry["subsets"][2]["is_reg"] is True
    json.dumps(entry)                                               # JSON-ready as it stands
