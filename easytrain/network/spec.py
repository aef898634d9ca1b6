"""What network to train: the user's choice of type, size and parts, checked once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from easytrain.catalog import LYCORIS_TYPES, NETWORK_TYPES
from easytrain.errors import UserError
from easytrain.network.blocks import BlockSettings

# kohya's default conv alpha when a conv dim is given without one.
DEFAULT_CONV_ALPHA = 1.0


@dataclass(frozen=True)
class NetworkSpec:
    """The network to attach.

    LoRA targets linear and 1x1-conv layers only. LoCon additionally targets the
    ResNet blocks and down/up-samplers; their 3x3 convs take ``conv_dim`` /
    ``conv_alpha``. LoHa and LoKr target the same layers as LoCon when a conv
    dim is given and the same layers as LoRA otherwise.
    """

    network_type: str
    dim: int
    alpha: float
    conv_dim: int | None = None
    conv_alpha: float | None = None
    train_unet: bool = True
    train_text_encoder: bool = True
    dora: bool = False  # weight-decomposed LoRA (LoRA and LoCon only); see network/dora.py
    blocks: Optional[BlockSettings] = None  # block-wise UNet dims and learning rates; see network/blocks.py

    def __post_init__(self) -> None:
        problems = []
        if self.network_type not in NETWORK_TYPES:
            problems.append(f"network_type: must be one of {', '.join(NETWORK_TYPES)}, got {self.network_type!r}")
        if not _is_int(self.dim) or self.dim < 1:
            problems.append(f"network_dim: must be an integer of at least 1, got {self.dim!r}")
        if not _is_number(self.alpha) or self.alpha <= 0:
            problems.append(f"network_alpha: must be a number above 0, got {self.alpha!r}")
        if self.conv_dim is not None and (not _is_int(self.conv_dim) or self.conv_dim < 1):
            problems.append(f"conv_dim: must be an integer of at least 1 or empty, got {self.conv_dim!r}")
        if self.conv_alpha is not None and (not _is_number(self.conv_alpha) or self.conv_alpha <= 0):
            problems.append(f"conv_alpha: must be a number above 0 or empty, got {self.conv_alpha!r}")
        if self.network_type == "LoCon" and self.conv_dim is None:
            problems.append("conv_dim: LoCon needs a conv dim (for example 8)")
        if self.dora and self.network_type not in ("LoRA", "LoCon"):
            problems.append(f"dora: works with LoRA and LoCon only, not {self.network_type}")
        if not (self.train_unet or self.train_text_encoder):
            problems.append("train_parts: at least one of the UNet and the text encoder must be trained")
        if problems:
            raise UserError("The network settings are not valid:", problems=problems)

    @property
    def targets_convs(self) -> bool:
        """True when ResNet blocks and samplers are targeted (LoCon, or LoHa/LoKr with a conv dim)."""
        return self.network_type != "LoRA" and self.conv_dim is not None

    @property
    def effective_conv_dim(self) -> int:
        return self.conv_dim if self.conv_dim is not None else self.dim

    @property
    def effective_conv_alpha(self) -> float:
        if self.conv_dim is None:
            return self.alpha
        return float(self.conv_alpha) if self.conv_alpha is not None else DEFAULT_CONV_ALPHA

    def size_of(self, target) -> tuple[int, float]:
        """(dim, alpha) of one target; dim 0 means the target gets no adapter (block-wise dims)."""
        conv = target.uses_conv_dim
        dim, alpha = (self.effective_conv_dim, self.effective_conv_alpha) if conv else (self.dim, float(self.alpha))
        if self.blocks is None or target.part != "unet":
            return dim, alpha
        return self.blocks.dim_and_alpha(self.blocks.index_of(target.kohya_name), conv=conv, dim=dim, alpha=alpha)

    @property
    def is_lycoris(self) -> bool:
        return self.network_type in LYCORIS_TYPES


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
