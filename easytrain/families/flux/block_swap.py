"""Block swap: keep some transformer blocks' frozen weights on the CPU, bring each in for its turn.

kohya's ``--blocks_to_swap N`` (library/custom_offloading_utils.py) keeps N blocks' weights off the
GPU and moves them in just before their forward and again before their backward. Here:

- a swapped block's FROZEN tensors (the base weights, fp8 or not, and buffers) live on the offload
  device (the CPU, pinned for a CUDA device); they never change, so moving out only drops the GPU
  copy. The network's own trainable weights stay on the compute device, so the optimizer never sees
  a parameter move;
- its forward: move in, run without keeping the graph, move out. The backward is a custom autograd
  function (``_SwappedCall``): move in, run the block's forward again with gradients (with the
  forward's random state and autocast), back-propagate the incoming gradients through it, move out.
  A swapped block is therefore recomputed in the backward as gradient checkpointing would: Flux
  training checkpoints its blocks anyway, so the model should not checkpoint a swapped block a
  second time (``is_swapped``);
- the blocks swapped are the last ones of each list. kohya counts ``blocks_to_swap`` in double-block
  units: N // 2 double blocks and 2 * (N - N // 2) single blocks (a single block is about half a
  double block), at most 17 double and 36 single on Flux.1 (``flux_swap_counts``).

On the CPU alone (the CPU standing in for both devices) every move in is a real copy, so a test sees
the same losses and gradients, bit for bit, as without swapping.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

_SWAPPED = "_easytrain_block_swap"


def flux_swap_counts(blocks_to_swap: int, double: int = 19, single: int = 38) -> tuple[int, int]:
    """kohya's split of ``blocks_to_swap``: (double blocks, single blocks) swapped."""
    if blocks_to_swap < 0:
        raise ValueError(f"blocks_to_swap must be 0 or more, got {blocks_to_swap}")
    n_double = blocks_to_swap // 2
    n_single = (blocks_to_swap - n_double) * 2
    if n_double > double - 2 or n_single > single - 2:
        raise ValueError(f"blocks_to_swap {blocks_to_swap} is too many for {double} double and {single} single "
                         f"blocks: at most {max_blocks_to_swap(double, single)} (two of each kind stay on the GPU)")
    return n_double, n_single


def max_blocks_to_swap(double: int = 19, single: int = 38) -> int:
    """The largest blocks_to_swap kohya's split allows (35 for Flux.1)."""
    best = 0
    for n in range(0, 2 * (double + single)):
        if n // 2 <= double - 2 and (n - n // 2) * 2 <= single - 2:
            best = n
    return best


def is_swapped(block: nn.Module) -> bool:
    """Whether ``block`` is swapped (its forward is already recomputed in the backward)."""
    return getattr(block, _SWAPPED, None) is not None


class _Mover:
    """Moves one block's frozen tensors between the compute and the offload device.

    The frozen tensors never change, so their offload copy (pinned for a CUDA device) is made once,
    at install: moving in copies it to the compute device, moving out drops that copy and points the
    block back at the offload copy. No copy back, no pinning per step.
    """

    def __init__(self, block: nn.Module, device: torch.device, offload: torch.device, pin: bool, name: str):
        self.block, self.device, self.offload, self.name = block, device, offload, name
        self.log: Optional[list] = None
        self.home = []  # (module, key, is_param, the offload copy)
        for module in block.modules():
            frozen = [(key, p, True) for key, p in module._parameters.items() if p is not None and not p.requires_grad]
            frozen += [(key, b, False) for key, b in module._buffers.items() if b is not None]
            for key, tensor, is_param in frozen:
                copy = tensor.detach().to(offload, copy=True)
                self.home.append((module, key, is_param, copy.pin_memory() if pin else copy))

    def _point(self, module, key, is_param, tensor) -> None:
        if is_param:
            module._parameters[key].data = tensor
        else:
            module._buffers[key] = tensor

    def to(self, where: str) -> None:
        for module, key, is_param, home in self.home:
            self._point(module, key, is_param,
                        home.to(self.device, copy=True, non_blocking=True) if where == "in" else home)
        if self.log is not None:
            self.log.append((self.name, where))

    def trainables_to_device(self) -> None:
        for param in self.block.parameters():
            if param.requires_grad and param.device != self.device:
                param.data = param.data.to(self.device)


def _autocast_state(device: torch.device):
    kind = device.type
    try:
        return kind, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind)
    except (RuntimeError, TypeError, AttributeError):
        return kind, False, None


class _SwappedCall(torch.autograd.Function):
    """The block's output with no graph kept: recomputed (the weights moved in again) in the backward."""

    @staticmethod
    def forward(ctx, mover, call, holder, anchor, *tensors):
        ctx.mover, ctx.call = mover, call
        ctx.save_for_backward(*tensors)
        ctx.autocast = _autocast_state(mover.device)
        ctx.cpu_rng = torch.get_rng_state()
        ctx.cuda_rng = torch.cuda.get_rng_state(mover.device) if mover.device.type == "cuda" else None
        mover.to("in")
        try:
            out = call(list(tensors))
        finally:
            mover.to("out")
        flat, holder["spec"] = tree_flatten(out)
        if not all(isinstance(t, torch.Tensor) for t in flat):
            raise TypeError("a swapped block must return tensors")
        return tuple(flat)

    @staticmethod
    def backward(ctx, *grads):
        inputs = [t.detach().requires_grad_(t.requires_grad) for t in ctx.saved_tensors]
        mover = ctx.mover
        kind, enabled, dtype = ctx.autocast
        devices = [mover.device] if ctx.cuda_rng is not None else []
        mover.to("in")
        try:
            with torch.random.fork_rng(devices=devices):
                torch.set_rng_state(ctx.cpu_rng)
                if ctx.cuda_rng is not None:
                    torch.cuda.set_rng_state(ctx.cuda_rng, mover.device)
                with torch.enable_grad(), torch.autocast(kind, dtype=dtype, enabled=enabled):
                    flat, _ = tree_flatten(ctx.call(inputs))
            pairs = [(o, g) for o, g in zip(flat, grads) if g is not None and o.requires_grad]
            if pairs:
                torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        finally:
            mover.to("out")
        return (None, None, None, None, *[t.grad if t.requires_grad else None for t in inputs])


def _swapped_forward(mover: _Mover, run: Callable):
    """The forward a swapped block gets in place of ``run`` (its own)."""
    # Makes the output require grad even when no input does (the first block's input comes from a frozen
    # layer), so that the network's weights inside the block get their gradients.
    anchor = torch.empty(0, requires_grad=True)

    def forward(*args, **kwargs):
        if not torch.is_grad_enabled():
            mover.to("in")
            try:
                return run(*args, **kwargs)
            finally:
                mover.to("out")
        leaves, spec = tree_flatten((args, kwargs))
        where = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]

        def call(tensors):
            filled = list(leaves)
            for i, tensor in zip(where, tensors):
                filled[i] = tensor
            inner_args, inner_kwargs = tree_unflatten(filled, spec)
            return run(*inner_args, **inner_kwargs)

        holder: dict = {}
        outs = _SwappedCall.apply(mover, call, holder, anchor, *[leaves[i] for i in where])
        return tree_unflatten(list(outs), holder["spec"])

    return forward


class BlockSwap:
    """Swaps ``blocks`` between ``device`` (compute) and ``offload`` (the CPU).

    Install after the network is attached (its trainable weights are put on ``device``) and after the
    base weights are cast or stored in fp8 (the offload copies are made here, once); ``remove``
    brings everything back to ``device`` and gives the blocks their own forward again. ``log``, when
    given, records every move as (block name, "in" | "out").
    """

    def __init__(self, blocks: Sequence[nn.Module], device, offload="cpu", *, pin_memory: Optional[bool] = None,
                 log: Optional[list] = None, names: Optional[Sequence[str]] = None):
        self.device, self.offload = torch.device(device), torch.device(offload)
        if pin_memory is None:
            pin_memory = self.device.type == "cuda" and self.offload.type == "cpu"
        self.movers: list[_Mover] = []
        names = list(names) if names is not None else [str(i) for i in range(len(blocks))]
        for block, name in zip(blocks, names):
            if is_swapped(block):
                raise ValueError(f"block {name} is swapped already")
            mover = _Mover(block, self.device, self.offload, pin_memory, name)
            mover.trainables_to_device()
            mover.to("out")
            mover.log = log
            setattr(block, _SWAPPED, True)
            block.forward = _swapped_forward(mover, block.forward)
            self.movers.append(mover)

    def remove(self) -> None:
        for mover in self.movers:
            mover.log = None
            mover.to("in")
            del mover.block.forward           # the instance attribute: the class's forward again
            delattr(mover.block, _SWAPPED)
        self.movers = []


def enable_block_swap(model: nn.Module, blocks_to_swap: int, device, offload="cpu", *,
                      log: Optional[list] = None) -> Optional[BlockSwap]:
    """Swap the last blocks of ``model.double_blocks`` and ``model.single_blocks`` as kohya counts them."""
    if not blocks_to_swap:
        return None
    double, single = list(model.double_blocks), list(model.single_blocks)
    n_double, n_single = flux_swap_counts(blocks_to_swap, len(double), len(single))
    chosen = double[len(double) - n_double:] + single[len(single) - n_single:]
    names = ([f"double_blocks.{i}" for i in range(len(double) - n_double, len(double))]
             + [f"single_blocks.{i}" for i in range(len(single) - n_single, len(single))])
    return BlockSwap(chosen, device, offload, log=log, names=names)


def unswapped_tensors(model: nn.Module):
    """(module, key, is_param) of every parameter and buffer but the swapped blocks' frozen ones."""
    stay = set()
    for module in model.modules():
        if is_swapped(module):
            stay |= {id(t) for t in module.parameters() if not t.requires_grad}
            stay |= {id(t) for t in module.buffers()}
    for module in model.modules():
        for key, param in module._parameters.items():
            if param is not None and id(param) not in stay:
                yield module, key, True
        for key, buffer in module._buffers.items():
            if buffer is not None and id(buffer) not in stay:
                yield module, key, False


def move_except_swapped(model: nn.Module, device) -> None:
    """Move ``model`` to ``device`` but for the swapped blocks' frozen tensors, which stay offloaded.

    What a loop does instead of ``model.to(device)`` (or accelerate's device placement, which must be
    off for a swapped model): a 12B transformer would not fit the GPU whole, which is why it swaps.
    """
    device = torch.device(device)
    for module, key, is_param in list(unswapped_tensors(model)):
        if is_param:
            param = module._parameters[key]
            param.data = param.data.to(device)
        else:
            module._buffers[key] = module._buffers[key].to(device)
