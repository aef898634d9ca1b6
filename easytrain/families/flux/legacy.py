"""kohya's Flux arguments in the answers files people bring (kohya TOML, kohya_ss GUI JSON): light, no torch.

easytrain/legacy.py calls ``import_legacy`` (through the catalog) with its coercions; the result is merged into
the imported answers. kohya's sd-scripts names (flux_train_network.py): --clip_l, --t5xxl, --ae, --fp8_base,
--blocks_to_swap, --timestep_sampling, --discrete_flow_shift, --sigmoid_scale, --model_prediction_type,
--guidance_scale, --apply_t5_attn_mask, --weighting_scheme, --t5xxl_max_token_length, --model_type; the
kohya_ss GUI adds flux1_checkbox (the catalog's legacy flag for Flux.1 dev) and train_t5xxl.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from easytrain.families.flux.options import T5_TOKENS, VARIANT_OF_KIND

# kohya's name -> (our answer, the coercion legacy.py applies: "text", "int", "float", "bool")
KEYS = {
    "clip_l": ("clip_l", "text"),
    "t5xxl": ("t5xxl", "text"),
    "ae": ("vae", "text"),
    "fp8_base": ("fp8_base", "bool"),
    "blocks_to_swap": ("blocks_to_swap", "int"),
    "timestep_sampling": ("timestep_sampling", "text"),
    "discrete_flow_shift": ("discrete_flow_shift", "float"),
    "sigmoid_scale": ("sigmoid_scale", "float"),
    "model_prediction_type": ("model_prediction_type", "text"),
    "guidance_scale": ("guidance_scale", "float"),
    "apply_t5_attn_mask": ("apply_t5_attn_mask", "bool"),
    "weighting_scheme": ("weighting_scheme", "text"),
    "train_t5xxl": ("train_t5", "bool"),
}
NETWORK_MODULES = ("networks.lora_flux",)
# The kohya_ss GUI writes its Flux fields into every file; at these values they ask for nothing.
GUI_FIELDS = ("flux1_checkbox", "t5xxl_max_token_length", "split_mode", "train_blocks", "cpu_offload_checkpointing",
              "flux_fused_backward_pass", "mem_eff_save", "single_blocks_to_swap", "double_blocks_to_swap",
              "blockwise_fused_optimizers", "split_qkv", "t5xxl_lr", "fp8_base_unet", "enable_all_linear",
              "img_attn_dim", "img_mlp_dim", "img_mod_dim", "single_dim", "txt_attn_dim", "txt_mlp_dim",
              "txt_mod_dim", "single_mod_dim", "in_dims", "train_double_block_indices",
              "train_single_block_indices", "model_type", *KEYS)


def _off(value: Any) -> bool:
    return value in (None, "", False, 0, "0", "false", "False", "none", "None")


def names_flux(data: Mapping[str, Any], from_toml: bool, to_bool: Callable) -> bool:
    """Whether the file trains Flux.1 / Chroma: the GUI's flux1_checkbox, kohya's model_type, or (a TOML holds
    only what was given) any of kohya's Flux arguments."""
    if to_bool(data.get("flux1_checkbox")) is True or str(data.get("model_type") or "").lower() in ("flux", "chroma"):
        return True
    return from_toml and any(key in data for key in KEYS if key != "train_t5xxl")


def import_legacy(data: Mapping[str, Any], convert: Mapping[str, Callable], from_toml: bool,
                  arch: str | None = None) -> tuple[dict, set, list]:
    """(our answers, the keys read, warnings) for kohya's Flux arguments in ``data``; ``arch``: the architecture
    the rest of the file named (None: unknown yet)."""
    used = {key for key in GUI_FIELDS if key in data and _off(data[key])} if not from_toml else set()
    if not names_flux(data, from_toml, convert["bool"]):
        return {}, used, []
    out: dict[str, Any] = {}
    for old, (new, kind) in KEYS.items():
        if old in data and data[old] not in (None, ""):
            out[new] = convert[kind](data[old])
            used.add(old)
    if str(data.get("model_type") or "").lower() == "chroma":
        out["architecture"] = "chroma"
    used.add("model_type")
    warnings = []
    length = convert["int"](data.get("t5xxl_max_token_length"))
    arch = out.get("architecture", arch)
    if isinstance(length, int) and length > 0:
        used.add("t5xxl_max_token_length")
        expected = T5_TOKENS.get(VARIANT_OF_KIND.get(arch)) if arch else None
        if (length != expected) if expected else (length not in set(T5_TOKENS.values())):
            warnings.append(f"t5xxl_max_token_length {length} is not used: easytrain pads T5 captions to kohya's "
                            "defaults, 512 tokens for Flux.1 dev and Chroma, 256 for schnell")
    return out, used, warnings
