"""Trace one LoRA training step of each full-size architecture on the meta device: the numbers behind
easytrain/memory_estimate.py.

    python bench/memory_trace.py [--arch sd1 sd2 sd2-v sdxl sdxl-v]

Nothing is allocated and nothing is computed: the models are built from the
shipped configs on the meta device (tensors with shapes and dtypes, no data),
so a full SDXL step traces in seconds on any machine. For each architecture it
prints the parameter counts of every part, the LoRA parameters per unit of dim
for kohya's module set, and the activation bytes per pixel of one step.

The activations are measured as a GPU would hold them:

- the step is the trainer's: the UNet with easytrain's LoRA (kohya's default
  module set, through the architecture adapter), frozen weights in the mixed
  precision, LoRA weights in fp32, a forward, an MSE loss, a backward;
- CUDA autocast is reproduced by a torch-function mode (``MetaAutocast``) with
  CUDA's op lists: convolutions, linear layers and attention in fp16/bf16,
  group and layer norms in fp32 (autocast needs a CUDA build to run itself);
- attention runs through the flash-attention kernel's op, which keeps only
  q, k, v, the output and the log-sum-exp for the backward, as PyTorch's
  scaled_dot_product_attention does on a recent GPU (meta tensors would
  otherwise take the math path and store the full attention matrix);
- a torch-dispatch mode (``LiveBytes``) adds up every storage an op creates
  and takes it off when Python frees it: its high-water mark over the forward
  and the backward, less what is still alive at the end (the LoRA gradients,
  counted separately), is the activation peak. This sees what a count of the
  tensors saved for backward (``saved_tensors_hooks``) misses: the block inputs
  that non-reentrant gradient checkpointing keeps, the recomputed block during
  the backward, and the backward's own temporaries.

The per-pixel figures are taken at each architecture's native size and
batch 1; memory_estimate.py scales them by pixels x batch (attention that
keeps no score matrix grows linearly with the pixels). tests/test_memory_estimate.py
re-runs this trace and fails when the stored table drifts from it.
"""

from __future__ import annotations

import argparse
import sys
import weakref
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402
from torch.utils.weak import WeakIdKeyDictionary  # noqa: E402

META = torch.device("meta")
TOKENS = 227            # a 225-token caption: three 75-token windows plus the first and last states
WINDOWS = 3             # ... encoded as three 77-token sequences by each text encoder
TRACED_DIM = 1          # LoRA parameters are linear in the dim: traced at 1, scaled by the estimate
MIXED = {"fp16": torch.float16, "no": torch.float32}  # bf16 holds the same bytes as fp16

# CUDA autocast's op lists (torch/csrc/autograd/autocast_mode.cpp), the ops a UNet step uses.
LOWER_PRECISION_OPS = {F.linear, F.conv2d, torch.conv2d, torch.matmul, torch.bmm, torch.baddbmm, torch.addmm,
                       F.scaled_dot_product_attention}
FLOAT32_OPS = {F.group_norm, F.layer_norm, torch.group_norm, torch.layer_norm, F.softmax, torch.softmax,
               F.log_softmax, F.mse_loss}


# ---- the two modes ----------------------------------------------------------------------------------


class MetaAutocast(TorchFunctionMode):
    """CUDA autocast's casts, applied above autograd so that the graph saves what a GPU run saves."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.dtype != torch.float32 and func in LOWER_PRECISION_OPS:
            args, kwargs = _cast((args, kwargs), self.dtype)
            if func is F.scaled_dot_product_attention:
                return flash_attention(*args, **kwargs)
        elif func in FLOAT32_OPS:
            args, kwargs = _cast((args, kwargs), torch.float32)
        elif func is F.scaled_dot_product_attention:
            return flash_attention(*args, **kwargs)  # fp32 on a GPU takes the memory-efficient kernel: the same
        return func(*args, **kwargs)


def _cast(tree, dtype):
    leaves, spec = torch.utils._pytree.tree_flatten(tree)
    cast = [x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != dtype else x
            for x in leaves]
    return torch.utils._pytree.tree_unflatten(cast, spec)


def flash_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    # The text encoders' causal mask makes a GPU take the memory-efficient kernel instead, which keeps the
    # same tensors for the backward (the 77x77 mask aside): the flash op stands in for it.
    return torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal,
                                                               scale=scale)[0]


class LiveBytes(TorchDispatchMode):
    """The bytes of every storage created under this mode that Python still holds, and their high-water mark.

    The storages of ``existing`` (modules' parameters and buffers, input tensors) are never counted, not even
    when an op returns a view of one (a transposed weight).
    """

    def __init__(self, *existing):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen = WeakIdKeyDictionary()
        for owner in existing:
            tensors = [*owner.parameters(), *owner.buffers()] if isinstance(owner, torch.nn.Module) else [owner]
            for tensor in tensors:
                self._seen[tensor.untyped_storage()] = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                if storage not in self._seen:
                    size = storage.nbytes()
                    self._seen[storage] = size
                    self.live += size
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, size)
        return out

    def _free(self, size: int) -> None:
        self.live -= size


# ---- the models -------------------------------------------------------------------------------------


def config_folder(arch: str) -> Path:
    from easytrain import catalog
    from easytrain.families.registry import config_folder

    return config_folder(catalog.architecture(arch).same_models_as or arch)


def meta_models(arch: str) -> dict:
    """The architecture's UNet, VAE and text encoder(s) on the meta device, from the shipped configs."""
    import json

    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    import transformers

    from easytrain.model.quiet import quiet_model_libraries

    quiet_model_libraries()
    folder = config_folder(arch)
    with init_empty_weights():
        models = dict(unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
                      vae=AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")))
        for part in ("text_encoder", "text_encoder_2"):
            if (folder / part).is_dir():
                kind = json.loads((folder / part / "config.json").read_text())["architectures"][0]
                config = transformers.CLIPTextConfig.from_pretrained(str(folder / part))
                models[part] = getattr(transformers, kind)(config)
    return models


def attach_network(arch: str, models: dict, network_type: str = "LoRA", *, conv_dim=None,
                   train_text_encoder: bool = True):
    """easytrain's network on the meta models, through the architecture's adapter (kohya's module set)."""
    from easytrain.families.registry import family_for
    from easytrain.network.build import build_network
    from easytrain.network.spec import NetworkSpec

    adapter = family_for(arch)
    encoders = tuple(models[p] for p in ("text_encoder", "text_encoder_2") if p in models)
    base = SimpleNamespace(unet=models["unet"], text_encoders=encoders, text_encoder=encoders[0])
    spec = NetworkSpec(network_type, TRACED_DIM, 1.0, conv_dim=conv_dim, conv_alpha=1.0 if conv_dim else None,
                       train_text_encoder=train_text_encoder)
    parts = adapter.network_models(base)
    return build_network(parts, adapter.network_targets(parts, spec), spec, seed=0)


def parameter_counts(models: dict) -> dict[str, int]:
    return {part: sum(p.numel() for p in model.parameters()) for part, model in models.items()}


def lora_parameters_per_dim(arch: str) -> dict[str, int]:
    """LoRA parameters at dim 1, per part ("unet", "text_encoder", ...), and the UNet's 3x3 convs at conv dim 1."""
    network = attach_network(arch, meta_models(arch))
    counts = {part: sum(p.numel() for p in network.parameters_of(part)) for part in network.models}
    with_convs = attach_network(arch, meta_models(arch), "LoCon", conv_dim=TRACED_DIM, train_text_encoder=False)
    counts["unet_convs"] = sum(p.numel() for p in with_convs.parameters_of("unet")) - counts["unet"]
    return counts


# ---- the step ---------------------------------------------------------------------------------------


def unet_inputs(arch: str, unet, side: int, batch: int, dtype: torch.dtype) -> dict:
    """A cached-latent batch: noisy latents, timesteps, cached text states (and SDXL's added conditioning)."""
    config = unet.config
    inputs = dict(sample=torch.empty(batch, config.in_channels, side // 8, side // 8, device=META),
                  timestep=torch.zeros(batch, dtype=torch.long, device=META),
                  encoder_hidden_states=torch.empty(batch, TOKENS, config.cross_attention_dim, device=META,
                                                    dtype=dtype))
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        inputs["added_cond_kwargs"] = dict(text_embeds=torch.empty(batch, pooled, device=META, dtype=dtype),
                                           time_ids=torch.empty(batch, 6, device=META))
    return inputs


def activation_bytes(arch: str, *, precision: str, checkpointing: bool, side: int | None = None,
                     batch: int = 1) -> int:
    """Peak bytes the UNet step holds beyond weights, inputs and LoRA gradients (see the module docstring)."""
    from easytrain import catalog

    side = side or catalog.native_resolution(arch)
    dtype = MIXED[precision]
    models = meta_models(arch)
    network = attach_network(arch, models, train_text_encoder=False)
    network.cast_base(dtype)
    unet = models["unet"]
    if checkpointing:  # as the loop enables it: non-reentrant
        unet.enable_gradient_checkpointing(partial(checkpoint_under_autocast, dtype))
    unet.train()
    inputs = unet_inputs(arch, unet, side, batch, dtype)
    target = torch.empty_like(inputs["sample"])
    with MetaAutocast(dtype), LiveBytes(unet, *tree_leaves(inputs)) as live:
        pred = unet(**inputs).sample
        loss = F.mse_loss(pred.float(), target)
        del pred
        loss.backward()
        del loss
    return live.peak - live.live


def text_activation_bytes(arch: str, *, precision: str, checkpointing: bool) -> int:
    """Bytes the trained text encoders hold from their forward until the backward, for one 225-token caption.

    They stay alive through the UNet's whole step, so they add to its peak.
    """
    dtype = MIXED[precision]
    models = meta_models(arch)
    network = attach_network(arch, models)
    network.cast_base(dtype)
    encoders = [models[p] for p in ("text_encoder", "text_encoder_2") if p in models]
    ids = torch.zeros(WINDOWS, 77, dtype=torch.long, device=META)
    kept = []
    with MetaAutocast(dtype), LiveBytes(*encoders, ids) as live:
        for encoder in encoders:
            if checkpointing:
                encoder._set_gradient_checkpointing(True, partial(checkpoint_under_autocast, dtype))
            encoder.train()
            out = encoder(ids, output_hidden_states=True, return_dict=True)
            kept.append(out.hidden_states[-2])
            del out
        held = live.live
    return held


def checkpoint_under_autocast(dtype: torch.dtype, function, *args, **kwargs):
    """Non-reentrant checkpointing whose recomputation runs under MetaAutocast too.

    The autograd engine does not carry torch-function modes into the backward
    (CUDA autocast's state, which checkpointing restores, is not such a mode).
    No RNG state is kept: the meta device has none.
    """
    from torch.utils.checkpoint import checkpoint

    def body(*inner_args, **inner_kwargs):
        if torch._C._len_torch_function_stack():
            return function(*inner_args, **inner_kwargs)
        with MetaAutocast(dtype):
            return function(*inner_args, **inner_kwargs)

    return checkpoint(body, *args, use_reentrant=False, preserve_rng_state=False, **kwargs)


def vae_encode_bytes(arch: str, *, side: int | None = None, batch: int = 1) -> int:
    """Peak bytes of one fp32 VAE encode without gradients (only when latents are not cached)."""
    from easytrain import catalog

    side = side or catalog.native_resolution(arch)
    vae = meta_models(arch)["vae"]
    pixels = torch.empty(batch, 3, side, side, device=META)
    with torch.no_grad(), MetaAutocast(torch.float32), LiveBytes(vae, pixels) as live:
        vae.encode(pixels).latent_dist.sample()
    return live.peak


@contextmanager
def _quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def trace(arch: str) -> dict:
    """Everything memory_estimate.py stores for ``arch``, measured."""
    from easytrain import catalog

    side = catalog.native_resolution(arch)
    pixels = side * side
    with _quiet():
        counts = parameter_counts(meta_models(arch))
        lora = lora_parameters_per_dim(arch)
        activations = {(precision, ckpt): activation_bytes(arch, precision=precision, checkpointing=ckpt) / pixels
                       for precision in MIXED for ckpt in (True, False)}
        vae = vae_encode_bytes(arch) / pixels
        text = {(precision, ckpt): text_activation_bytes(arch, precision=precision, checkpointing=ckpt)
                for precision in MIXED for ckpt in (True, False)}
    return dict(parameters=counts, lora_per_dim=lora, activation_bytes_per_pixel=activations,
                vae_encode_bytes_per_pixel=vae, text_activation_bytes=text, traced_side=side)


def table_entry(arch: str, found: dict) -> str:
    """``found`` as Python source for memory_estimate.MEMORY, at most 110 characters a line."""
    from pprint import pformat

    side = found["traced_side"]
    found = {**found, "activation_bytes_per_pixel": {k: round(v, 1) for k, v in
                                                     found["activation_bytes_per_pixel"].items()},
             "vae_encode_bytes_per_pixel": round(found["vae_encode_bytes_per_pixel"], 1)}
    lines = [f'    "{arch}": ArchitectureMemory(  # traced at {side}x{side}, batch 1']
    for key in ("traced_side", "parameters", "lora_per_dim", "text_activation_bytes", "activation_bytes_per_pixel",
                "vae_encode_bytes_per_pixel"):
        start = f"        {key}="
        text = pformat(found[key], width=110 - len(start)).replace("\n", "\n" + " " * len(start))
        lines.append(f"{start}{text},")
    return "\n".join(lines + ["    ),"])


def main(argv=None) -> int:
    from easytrain import catalog

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    traced = [a.id for a in catalog.ARCHITECTURES.values() if not a.same_models_as]
    parser.add_argument("--arch", nargs="+", default=traced, choices=catalog.ARCHITECTURE_IDS)
    args = parser.parse_args(argv)
    print("# easytrain/memory_estimate.py's MEMORY table, as traced by bench/memory_trace.py")
    for arch in args.arch:
        print(table_entry(arch, trace(arch)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
