"""Flux's own questions: its companion files, the memory levers and the flow-matching settings (light).

Each is (the id of the question it follows, Question); questions.py places them in its table, and they
apply only to Flux.1 and Chroma models. The plan hands their answers to this family as plan.model.options.
The defaults are what kohya's Flux docs recommend; each help text says why.
"""

from __future__ import annotations

from typing import Any, Optional

from easytrain import catalog
from easytrain.families.flux.options import (
    DEFAULT_REASONS, MODEL_PREDICTION_TYPES, TIMESTEP_SAMPLINGS, WEIGHTING_SCHEMES, FlowSettings,
)
from easytrain.question import Question, Values

FAMILY = "flux"
ARCH = ("base_model", "architecture")  # what every condition here reads (the architecture, from the file)
TEXT_FILES = (".safetensors", ".sft")


def _architecture(v: Values) -> Optional[str]:
    from easytrain.questions import architecture_of  # defined before the table asks for these questions

    return architecture_of(v)


def _is_flux(v: Values) -> bool:
    arch = _architecture(v)
    return isinstance(arch, str) and arch in catalog.ARCHITECTURES and catalog.architecture(arch).family == FAMILY


def _has_clip_l(v: Values) -> bool:
    return _is_flux(v) and _architecture(v) != "chroma"


def _proposed_levers(v: Values) -> Optional[tuple[bool, int]]:
    """(fp8 base, blocks to swap) of the fastest lever that fits the GPU this machine has (or
    EASYTRAIN_GPU_MEMORY); None without a known GPU."""
    from easytrain import machine
    from easytrain.families.flux.memory import LEVERS, propose_levers

    gpu = machine.gpu_info()
    if gpu is None:
        return None
    side = int(v.get("resolution") or 1024)
    found = propose_levers(gpu.memory_gib, side, int(v.get("height") or side), batch=int(v.get("batch_size") or 1),
                           dim=int(v.get("network_dim") or 16))
    name = found[0] if found else LEVERS[-1][0]
    _, fp8, swap, _ = next(lever for lever in LEVERS if lever[0] == name)
    return fp8, swap


def _default_fp8(v: Values) -> bool:
    levers = _proposed_levers(v)
    return False if levers is None else levers[0]


def _default_swap(v: Values) -> int:
    levers = _proposed_levers(v)
    return 0 if levers is None else levers[1]


def _gpu_note(v: Values) -> str:
    from easytrain import machine

    gpu = machine.gpu_info()
    return f" The default fits {gpu.name} ({gpu.memory_gib:.0f} GB) by check's estimate." if gpu else ""


def _check_swap(value: Any, v: Values) -> Optional[str]:
    from easytrain.families.flux.memory import swap_counts

    try:
        swap_counts(int(value))
    except ValueError as exc:
        return str(exc)
    return None


_DEFAULTS = FlowSettings()

QUESTIONS = (
    ("architecture", Question(
        "clip_l", "Which CLIP-L file goes with this Flux model?",
        "Flux.1 reads captions with CLIP-L and T5-XXL, kept in their own files (ComfyUI: "
        "models/text_encoders or models/clip, usually clip_l.safetensors). Empty: easytrain looks next to "
        "the model and says which file it picked.",
        "file", "model", default=None, optional=True, extensions=TEXT_FILES,
        condition=_has_clip_l, condition_text="a Flux.1 model", depends_on=("base_model", "architecture"),
    )),
    ("clip_l", Question(
        "t5xxl", "Which T5-XXL file goes with this model?",
        "The T5-XXL text encoder (ComfyUI: models/text_encoders or models/clip, t5xxl_fp16.safetensors or "
        "its fp8 version). Empty: easytrain looks next to the model and says which file it picked.",
        "file", "model", default=None, optional=True, extensions=TEXT_FILES,
        condition=_is_flux, condition_text="a Flux.1 or Chroma model", depends_on=("base_model", "architecture"),
    )),
    ("gradient_checkpointing", Question(
        "fp8_base", "Store the transformer in fp8?",
        "Halves the 12B transformer's weights (about 24 -> 12 GB); it still computes in bf16 and the LoRA "
        "trains in fp32, as kohya's --fp8_base. Off only on cards with more than 32 GB.",
        "yesno", "learning", default=_default_fp8, default_text="yes when the GPU needs it (no without a GPU)",
        condition=_is_flux, condition_text="a Flux.1 or Chroma model",
        depends_on=("base_model", "architecture", "resolution", "batch_size"),
    )),
    ("fp8_base", Question(
        "blocks_to_swap", "How many transformer blocks to keep on the CPU?",
        "Blocks swapped in for their turn and back out, as kohya's --blocks_to_swap: 16 brings 1024 px "
        "near 12 GB with 8-bit AdamW, 28 near 8 GB, each slower. 0 keeps every block on the GPU.",
        "int", "learning", default=_default_swap, default_text="what the GPU needs", minimum=0, maximum=35,
        check=_check_swap, condition=_is_flux, condition_text="a Flux.1 or Chroma model",
        depends_on=("base_model", "architecture", "resolution", "batch_size", "fp8_base"),
    )),
    ("ema_decay", Question(
        "timestep_sampling", "How are the timesteps drawn? (Flux)",
        DEFAULT_REASONS["timestep_sampling"] + ". sigma: the plain schedule; uniform; sigmoid; flux_shift: "
        "shifted by the image size, as Flux's own sampler.",
        "choice", "advanced", default=_DEFAULTS.timestep_sampling, advanced=True,
        choices=tuple((name, name) for name in TIMESTEP_SAMPLINGS),
        condition=_is_flux, condition_text="a Flux.1 or Chroma model", depends_on=ARCH,
    )),
    ("timestep_sampling", Question(
        "discrete_flow_shift", "Flow shift? (Flux)", DEFAULT_REASONS["discrete_flow_shift"] + ".",
        "float", "advanced", default=_DEFAULTS.discrete_flow_shift, above=0.0, maximum=100.0, advanced=True,
        condition=_is_flux, condition_text="a Flux.1 or Chroma model", depends_on=ARCH,
    )),
    ("discrete_flow_shift", Question(
        "sigmoid_scale", "Sigmoid scale? (Flux)", DEFAULT_REASONS["sigmoid_scale"] + ".",
        "float", "advanced", default=_DEFAULTS.sigmoid_scale, above=0.0, maximum=100.0, advanced=True,
        condition=_is_flux, condition_text="a Flux.1 or Chroma model", depends_on=ARCH,
    )),
    ("sigmoid_scale", Question(
        "model_prediction_type", "How is the prediction read? (Flux)",
        DEFAULT_REASONS["model_prediction_type"] + "; additive adds the noisy input, sigma_scaled scales by "
        "the noise level (kohya's model_prediction_type).",
        "choice", "advanced", default=_DEFAULTS.model_prediction_type, advanced=True,
        choices=tuple((name, name) for name in MODEL_PREDICTION_TYPES),
        condition=_is_flux, condition_text="a Flux.1 or Chroma model", depends_on=ARCH,
    )),
    ("model_prediction_type", Question(
        "weighting_scheme", "Loss weighting? (Flux)", DEFAULT_REASONS["weighting_scheme"] + ".",
        "choice", "advanced", default=_DEFAULTS.weighting_scheme, advanced=True,
        choices=tuple((name, name) for name in WEIGHTING_SCHEMES),
        condition=_is_flux, condition_text="a Flux.1 or Chroma model", depends_on=ARCH,
    )),
    ("weighting_scheme", Question(
        "guidance_scale", "Guidance input while training? (Flux.1 dev)", DEFAULT_REASONS["guidance_scale"] + ".",
        "float", "advanced", default=_DEFAULTS.guidance_scale, minimum=0.0, maximum=100.0, advanced=True,
        condition=lambda v: _architecture(v) == "flux-dev", condition_text="a Flux.1 dev model", depends_on=ARCH,
    )),
    ("guidance_scale", Question(
        "apply_t5_attn_mask", "Mask T5's padding? (Flux)", DEFAULT_REASONS["apply_t5_attn_mask"] + ".",
        "yesno", "advanced", default=lambda v: _architecture(v) == "chroma", default_text="no (Chroma: yes)",
        advanced=True, condition=_is_flux, condition_text="a Flux.1 or Chroma model", depends_on=ARCH,
    )),
    ("apply_t5_attn_mask", Question(
        "train_t5", "Also train T5-XXL? (Flux)",
        "kohya trains CLIP-L with the text-encoder learning rate and leaves T5 alone unless asked: T5 is "
        "4.7B parameters and rarely needs it. Only with a text-encoder learning rate above 0.",
        "yesno", "advanced", default=False, advanced=True,
        condition=_is_flux, condition_text="a Flux.1 or Chroma model", depends_on=ARCH,
    )),
    ("train_t5", Question(
        "t5_tokenizer", "Where is the T5 tokenizer? (Flux)",
        "The folder of T5 v1.1's tokenizer (tokenizer.json): FLUX.1-dev's tokenizer_2/ or ComfyUI's "
        "comfy/text_encoders/t5_tokenizer. Empty: easytrain looks in a diffusers model's own folder, the "
        "ComfyUI install holding the model, the Hugging Face cache and EASYTRAIN_T5_TOKENIZER; check says "
        "where it looked when it finds none.",
        "folder", "advanced", default=None, optional=True, advanced=True,
        condition=_is_flux, condition_text="a Flux.1 or Chroma model", depends_on=ARCH,
    )),
)
