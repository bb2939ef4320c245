"""pi0's denoising loop at a fixed shape, so that on CUDA the whole Euler integration (every step of it) is
captured once in a CUDA graph and replayed per batch with no host round trip between steps (issue 15).

The graph reads only preallocated buffers: the prefix keys/values padded to a capacity (a multiple of
CAPACITY_STEP, the padding masked out), the state, the noise and the prefix mask, each padded to the batch
bucket by repeating row 0. Its body is `pi0_flow.integrate`, the same function the eager path calls, over a
DynamicCache built inside the graph from those buffers, so a replay sees whatever was copied in last.
Masked padding changes no result: the suffix positions come from the mask's cumulative sum and a masked
key gets no attention weight. transformers' mask helpers skip their data-dependent shortcuts while a CUDA
stream is capturing (`is_tracing`), which is what makes the expert's forward capturable.

On CPU the pool is not used (padding would only cost); tests run `FlowGraph.forward` eagerly and hold it to
the plain loop.
"""
from __future__ import annotations

import logging
import threading

import torch
from transformers import DynamicCache, PI0ForConditionalGeneration

from workers.policies.pi0_flow import integrate

log = logging.getLogger(__name__)
BUCKETS = (1, 2, 4, 8, 16)
CAPACITY_STEP = 64  # prefix length rounds up to this: 3 cameras x 256 + any prompt fit a handful of graphs
WARMUP_RUNS = 2  # kernels initialise lazily; capture wants that done on a side stream first


def bucket_for(batch: int) -> int | None:
    return next((b for b in BUCKETS if b >= batch), None)


def capacity_for(length: int) -> int:
    return -(-length // CAPACITY_STEP) * CAPACITY_STEP


class FlowGraph:
    """The buffers and the captured integration of one (bucket, capacity, num_steps)."""

    def __init__(self, model: PI0ForConditionalGeneration, like: DynamicCache, mask_dtype: torch.dtype,
                 bucket: int, capacity: int, num_steps: int):
        cfg = model.config
        first = like.layers[0].keys
        dev = first.device
        kv_shape = lambda layer: (bucket, layer.keys.shape[1], capacity, layer.keys.shape[3])  # noqa: E731
        self.model, self.num_steps = model, num_steps
        self.keys = [torch.zeros(kv_shape(layer), device=dev, dtype=layer.keys.dtype) for layer in like.layers]
        self.values = [torch.zeros(kv_shape(layer), device=dev, dtype=layer.values.dtype) for layer in like.layers]
        self.mask = torch.zeros(bucket, capacity, device=dev, dtype=mask_dtype)
        self.state = torch.zeros(bucket, cfg.max_state_dim, device=dev, dtype=torch.float32)
        self.noise = torch.zeros(bucket, cfg.chunk_size, cfg.max_action_dim, device=dev, dtype=torch.float32)
        self.out: torch.Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None

    def load(self, state: torch.Tensor, noise: torch.Tensor, attention_mask: torch.Tensor,
             cache: DynamicCache) -> None:
        """Copy a batch in (in place: the graph reads these addresses). Rows past the batch repeat row 0."""
        batch, length = attention_mask.shape
        rows = torch.zeros(self.mask.shape[0], device=attention_mask.device, dtype=torch.long)
        rows[:batch] = torch.arange(batch, device=attention_mask.device)
        for mine, theirs in ((self.keys, [layer.keys for layer in cache.layers]),
                             (self.values, [layer.values for layer in cache.layers])):
            for buf, src in zip(mine, theirs, strict=True):
                buf[:, :, :length].copy_(src[rows])
                buf[:, :, length:].zero_()
        self.mask.zero_()
        self.mask[:, :length].copy_(attention_mask[rows])
        self.state.copy_(state[rows])
        self.noise.copy_(noise[rows])

    def forward(self) -> torch.Tensor:
        """The integration over the buffers: what is captured, and what runs eagerly without a graph."""
        cache = DynamicCache()
        for i, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            cache.update(k, v, i)
        return integrate(self.model, self.state, self.noise, self.mask, cache, self.num_steps)

    def capture(self) -> None:
        """CUDA only: warm up on a side stream, then record the whole loop once."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_RUNS):
                self.forward()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.out = self.forward()
        self.graph = graph

    def run(self, batch: int) -> torch.Tensor:
        if self.graph is None:
            return self.forward()[:batch]
        self.graph.replay()
        assert self.out is not None
        return self.out[:batch].clone()


class FlowGraphPool:
    """One FlowGraph per (bucket, capacity, num_steps), captured on first use. A batch above the largest
    bucket runs the plain loop."""

    def __init__(self, model: PI0ForConditionalGeneration, *, use_graphs: bool | None = None):
        self.model = model
        device = next(model.parameters()).device
        self.use_graphs = device.type == "cuda" if use_graphs is None else use_graphs
        self.graphs: dict[tuple[int, int, int], FlowGraph] = {}
        self._lock = threading.Lock()  # one set of buffers per shape: callers take turns on it

    def integrate(self, state: torch.Tensor, noise: torch.Tensor, attention_mask: torch.Tensor,
                  cache: DynamicCache, num_steps: int) -> torch.Tensor:
        batch, length = attention_mask.shape
        bucket = bucket_for(batch)
        if not self.use_graphs or bucket is None:
            return integrate(self.model, state, noise.float(), attention_mask, cache, num_steps)
        key = (bucket, capacity_for(length), num_steps)
        with self._lock:
            flow = self.graphs.get(key)
            if flow is None:
                flow = FlowGraph(self.model, cache, attention_mask.dtype, *key)
                flow.load(state, noise, attention_mask, cache)
                try:
                    flow.capture()
                except Exception:  # noqa: BLE001 (a capture we cannot make costs speed, never a request)
                    # A transformers or driver version that syncs inside the expert's forward cannot be
                    # captured; the eager loop gives the same actions, so serve with it and say so once.
                    log.warning("pi0 flow: CUDA graph capture failed for bucket %d, capacity %d; running the "
                                "Euler loop eagerly from now on", key[0], key[1], exc_info=True)
                    self.use_graphs = False
                    return integrate(self.model, state, noise.float(), attention_mask, cache, num_steps)
                self.graphs[key] = flow
            flow.load(state, noise, attention_mask, cache)
            return flow.run(batch)
