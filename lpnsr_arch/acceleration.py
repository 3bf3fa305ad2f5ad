"""Wrappers that replay a network's GPU work instead of launching it op by op.

At inference sizes such as LR 64 the chain is bound by kernel launches, not arithmetic (``/work/shared/anchors``):
ten network calls (pre-upsampler, encoder, 4 denoiser, 3 noise-predictor, decoder) of hundreds of small kernels
each. Two ways remove the launches:

- :class:`CapturedGraphs`: plain CUDA graphs of the eager network, one per call signature (input shapes, dtypes,
  memory formats, autocast state, the other arguments). Capture takes two warm-up calls and no compiler: the first
  image of a size runs slower than eagerly, and the graphs pay off over a few images of one size.
- :class:`GraphReplayed`: ``torch.compile(mode='reduce-overhead')`` (Inductor kernels, also replayed as CUDA graphs)
  made safe for the chain; the compilation takes minutes for the official networks.

Both return copies of the outputs: the next replay writes into the same memory, while the chain keeps outputs across
calls of other networks (the encoder's latent for every step, the x0 prediction across the noise predictor's call).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Dict, Hashable, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

logger = logging.getLogger('basicsr')

__all__ = ['CapturedGraphs', 'GraphReplayed', 'call_signature']


def _clone_tensors(tree: object) -> object:
    """``tree`` (tensors in tuples, lists, dicts) with every tensor copied."""
    return tree_map(lambda value: value.clone() if isinstance(value, Tensor) else value, tree)


class GraphReplayed(nn.Module):
    """A network compiled with ``mode='reduce-overhead'`` (CUDA graphs), made safe to call in a chain: each call
    starts a new graph step and returns copies of the outputs."""

    def __init__(self, compiled: nn.Module):
        super().__init__()
        self.compiled = compiled

    def forward(self, *args: object, **kwargs: object) -> object:
        torch.compiler.cudagraph_mark_step_begin()
        return _clone_tensors(self.compiled(*args, **kwargs))


def call_signature(args: Tuple[object, ...], kwargs: Dict[str, object]) -> Optional[Hashable]:
    """What a captured graph is specific to: each tensor's shape, dtype, device and strides, every other argument's
    value, and the autocast state. ``None`` when the call cannot be captured: a tensor off CUDA, gradients on, an
    argument that is neither a tensor nor hashable."""
    leaves, spec = tree_flatten((args, kwargs))
    key: List[Hashable] = [str(spec)]
    for leaf in leaves:
        if isinstance(leaf, torch.Generator):
            return None  # its draws would be frozen into the graph
        if isinstance(leaf, Tensor):
            if leaf.device.type != 'cuda' or leaf.requires_grad:
                return None
            key.append((tuple(leaf.shape), leaf.dtype, str(leaf.device), leaf.stride()))
        else:
            try:
                hash(leaf)
            except TypeError:
                return None
            key.append(leaf)
    if torch.is_grad_enabled():
        return None
    key.append(('autocast', torch.is_autocast_enabled('cuda'), torch.get_autocast_dtype('cuda')))
    return tuple(key)


class _Graph:
    """One capture: the graph, its static inputs (copied into before each replay) and its static outputs."""

    def __init__(self, module: nn.Module, args: Tuple[object, ...], kwargs: Dict[str, object], warmup: int,
                 device: torch.device):
        self.device = device
        static_args, static_kwargs = _clone_tensors((args, kwargs))
        self.static_inputs = tree_flatten((static_args, static_kwargs))[0]
        with torch.cuda.device(device):
            caller = torch.cuda.current_stream(device)
            side = torch.cuda.Stream(device=device)
            side.wait_stream(caller)
            with torch.cuda.stream(side):  # warm-up off the caller's stream: builds the cached constants
                for _ in range(warmup):
                    module(*static_args, **static_kwargs)
            caller.wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(self.graph):
                    self.outputs = module(*static_args, **static_kwargs)
            finally:  # a failed capture leaves the capture stream current (torch.cuda.graph's exit stops early)
                torch.cuda.set_stream(caller)

    def __call__(self, args: Tuple[object, ...], kwargs: Dict[str, object]) -> object:
        given, _ = tree_flatten((args, kwargs))
        with torch.cuda.device(self.device):
            for target, value in zip(self.static_inputs, given):
                if isinstance(target, Tensor):
                    target.copy_(value)
            self.graph.replay()
            return _clone_tensors(self.outputs)


class CapturedGraphs(nn.Module):
    """``module`` replayed from CUDA graphs, one per :func:`call_signature`; other calls (CPU tensors, training with
    gradients) run eagerly.

    The first call of a signature runs ``warmup`` eager calls on a side stream, then captures one. A capture that
    fails (an operation a graph cannot hold) is logged and that signature runs eagerly from then on. Autocast
    around the calls must not cache casts (``torch.autocast(..., cache_enabled=False)``): a cached cast made outside
    the capture would be freed while the graph still reads it. Each graph keeps its own memory pool (the network's
    activations at that size); at most ``max_graphs`` are kept, the least recently used going first, so a folder of
    images of many sizes does not pile up pools.
    """

    def __init__(self, module: nn.Module, *, warmup: int = 2, max_graphs: int = 4):
        super().__init__()
        self.module = module
        self.warmup = warmup
        self.max_graphs = max_graphs
        self._graphs: 'OrderedDict[Hashable, Optional[_Graph]]' = OrderedDict()

    def forward(self, *args: object, **kwargs: object) -> object:
        key = call_signature(args, kwargs)
        if key is None:
            return self.module(*args, **kwargs)
        if key in self._graphs:
            self._graphs.move_to_end(key)
        else:
            self._graphs[key] = self._capture(args, kwargs)
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        graph = self._graphs[key]
        return self.module(*args, **kwargs) if graph is None else graph(args, kwargs)

    def _capture(self, args: Tuple[object, ...], kwargs: Dict[str, object]) -> Optional[_Graph]:
        device = next(leaf.device for leaf in tree_flatten((args, kwargs))[0] if isinstance(leaf, Tensor))
        try:
            return _Graph(self.module, args, kwargs, self.warmup, device)
        except RuntimeError as error:
            # an error inside the capture usually makes ending the capture fail too: name the first one as well
            first = f' (after: {str(error.__context__).splitlines()[0]})' if error.__context__ is not None else ''
            logger.warning(f'CUDA graph capture of {type(self.module).__name__} failed, running it eagerly at this '
                           f'size: {str(error).splitlines()[0]}{first}')
            return None
