"""What a zip-format .ckpt holds, read the way training reads it, without running anything in it.

Training loads a .ckpt with torch's weights-only unpickler, which refuses any
global outside a short list (tensor rebuilders, storages, dtypes, OrderedDict)
and then wants a plain dict of tensors (``state_dict`` or the top level). This
reader applies the same rules with the standard library alone: the pickle is
read with every allowed global replaced by a stand-in that only records a
tensor's shape, so `check` refuses exactly the files `train` would refuse (a
file that carries code, one that is not a dict of tensors) and reads real
shapes (the text encoder's vocabulary) in milliseconds.
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
import re
from pathlib import Path
from typing import Any

from easytrain.errors import UserError

# torch's weights-only allow-list (torch._weights_only_unpickler._get_allowed_globals), by rule.
_ALLOWED = frozenset({
    "_codecs.encode", "builtins.bytearray", "builtins.complex", "builtins.set", "collections.Counter",
    "collections.OrderedDict", "torch.Size", "torch.Tensor", "torch.device", "torch.nn.parameter.Parameter",
    "torch.serialization._get_layout", "torch.storage.TypedStorage", "torch.storage.UntypedStorage",
    "torch._tensor._rebuild_from_type_v2",
})
_TORCH_TYPES = re.compile(r"^torch(\.cuda)?(\.sparse)?\.\w+(Storage|Tensor)$")
_TORCH_SCALARS = re.compile(r"^torch\.(u?int\d*|float\w*|bfloat16|complex\d+|bool|bits\w+|q?u?int\w*|per_\w+)$")

CARRIES_CODE = ("this .ckpt contains code, which easytrain will not run; convert it to .safetensors first "
                "(for example with a trusted tool you already use)")
NOT_TENSORS = "this .ckpt does not hold a plain state dict of tensors"


def _allowed(qualified: str) -> bool:
    return (qualified in _ALLOWED or qualified.startswith("torch._utils._rebuild_")
            or bool(_TORCH_TYPES.match(qualified)) or bool(_TORCH_SCALARS.match(qualified)))


class TensorShape:
    """A tensor as this reader sees it: its shape only."""

    def __init__(self, shape) -> None:
        self.shape = [int(n) for n in shape]


class _Stub:
    """A storage, dtype or device: anything allowed that is not a tensor."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "_Stub":
        return _Stub()


def _rebuild_tensor(storage, offset, size, *rest, **kwargs) -> TensorShape:
    return TensorShape(size)


def _rebuild_parameter(data, *rest, **kwargs):
    return data


def _rebuild_from_type(func, _type, args, _state):
    return func(*args)


_HARMLESS = {"collections.OrderedDict": collections.OrderedDict, "collections.Counter": collections.Counter,
             "builtins.set": set, "builtins.bytearray": bytearray, "builtins.complex": complex,
             "_codecs.encode": codecs.encode}


class _CarriesCode(Exception):
    pass


class _Reader(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        qualified = f"{module}.{name}"
        if not _allowed(qualified):
            raise _CarriesCode(qualified)
        if qualified in _HARMLESS:
            return _HARMLESS[qualified]
        if qualified in ("torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
                         "torch.nn.parameter.Parameter"):
            return _rebuild_parameter
        if qualified == "torch._tensor._rebuild_from_type_v2":
            return _rebuild_from_type
        if name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3"):
            return _rebuild_tensor
        if name == "_rebuild_meta_tensor_no_storage":
            return lambda dtype, size, *rest, **kwargs: TensorShape(size)
        if module == "torch._utils":  # quantized, sparse, nested, device tensors: a tensor, shape not read
            return lambda *args, **kwargs: TensorShape(())
        return _Stub()

    def persistent_load(self, pid):
        return _Stub()


def read_ckpt(path: Path, data: bytes) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """(shape of each tensor of the state dict, the other top-level entries) of a .ckpt's ``data.pkl``.

    UserError, in train's words, for a pickle that carries code or is not a dict of tensors.
    """
    try:
        loaded = _Reader(io.BytesIO(data)).load()
    except _CarriesCode:
        raise UserError(f"{path}: {CARRIES_CODE}") from None
    except Exception as exc:  # a damaged pickle: train cannot read it either
        raise UserError(f"{path}: cannot read this .ckpt file ({type(exc).__name__}: {str(exc)[:200]})") from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, TensorShape) for v in state.values()):
        raise UserError(f"{path}: {NOT_TENSORS}")
    others = {k: v for k, v in loaded.items() if k != "state_dict" and not isinstance(v, TensorShape)}
    return {str(k): v.shape for k, v in state.items()}, others
