"""OpenVLA decode at the memory floor's shape (issue 15): a static KV cache per batch bucket and a
single-token step that only touches preallocated device buffers, so on CUDA it is captured once per
(bucket, capacity) in a CUDA graph and replayed n_steps-1 times with no host synchronisation.

- Prefill: transformers' LlamaModel with SDPA and a DynamicCache (the same call as the dynamic path); its
  keys/values are then copied into the static buffers. Rows are padded up to the bucket by repeating row 0.
- Step: Llama's own modules (norms, projections, rotary, MLP), the new key/value written at a device-side
  index, SDPA over the whole buffer with a boolean mask whose column for that index is switched on. Every
  counter (token, position, write index, output column) lives on the device and is updated in place.
- On CPU the same step runs eagerly; tests hold it to the dynamic path's tokens exactly in fp32.
"""
from __future__ import annotations

import logging
import threading

import torch
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from workers.policies.hf_compat import cache_kwarg
from workers.policies.openvla.model import OpenVLAModel
from workers.policies.timing import Stopwatch

log = logging.getLogger(__name__)
BUCKETS = (1, 2, 4, 8, 16)
CAPACITY_STEP = 128  # cache length rounds up to this, so a graph serves every prompt length below it
WARMUP_STEPS = 2  # CUDA graph capture wants the kernels' lazy initialisation done on a side stream first


def bucket_for(batch: int) -> int | None:
    return next((b for b in BUCKETS if b >= batch), None)


def capacity_for(length: int) -> int:
    return -(-length // CAPACITY_STEP) * CAPACITY_STEP


class StaticDecoder:
    """The buffers and the step of one (bucket, capacity, n_steps); `graph` is set once captured."""

    def __init__(self, model: OpenVLAModel, bucket: int, capacity: int, n_steps: int,
                 allowed: tuple[int, int] | None):
        llm = model.language_model.model
        cfg = llm.config
        attn = llm.layers[0].self_attn
        param = next(llm.parameters())
        dev, dtype = param.device, param.dtype
        shape = (bucket, cfg.num_key_value_heads, capacity, attn.head_dim)
        self.model, self.allowed, self.n_steps = model, allowed, n_steps
        self.keys = [torch.zeros(shape, device=dev, dtype=dtype) for _ in llm.layers]
        self.values = [torch.zeros(shape, device=dev, dtype=dtype) for _ in llm.layers]
        self.mask = torch.zeros(bucket, 1, 1, capacity, device=dev, dtype=torch.bool)
        self.token = torch.zeros(bucket, device=dev, dtype=torch.long)
        self.pos = torch.zeros(bucket, 1, device=dev, dtype=torch.long)
        self.idx = torch.zeros(1, device=dev, dtype=torch.long)
        self.col = torch.zeros(1, device=dev, dtype=torch.long)
        self.out = torch.zeros(bucket, n_steps, device=dev, dtype=torch.long)
        self.graph: torch.cuda.CUDAGraph | None = None

    def load_prefix(self, cache: DynamicCache, mask: torch.Tensor, positions: torch.Tensor,
                    first: torch.Tensor) -> None:
        """Copy the prefill into the buffers and reset the counters (in place: the graph reads these).
        Bucket rows beyond the batch repeat row 0, so they compute something finite and are dropped."""
        rows = torch.zeros(self.token.shape[0], device=first.device, dtype=torch.long)
        rows[: first.shape[0]] = torch.arange(first.shape[0], device=first.device)
        length = mask.shape[1]
        for i, layer in enumerate(cache.layers):
            self.keys[i][:, :, :length].copy_(layer.keys[rows])
            self.values[i][:, :, :length].copy_(layer.values[rows])
        self.mask.zero_()
        self.mask[:, 0, 0, :length].copy_(mask[rows].bool())
        self.pos.copy_(positions[rows, -1:])
        self.token.copy_(first[rows])
        self.idx.fill_(length)
        self.col.fill_(1)
        self.out.zero_()
        self.out[:, 0].copy_(self.token)

    def step(self) -> None:
        """One token for every row; reads and writes only the buffers (capturable)."""
        lm = self.model.language_model
        llm = lm.model
        x = lm.get_input_embeddings()(self.token[:, None])
        self.pos.add_(1)
        self.mask.index_fill_(3, self.idx, True)
        cos, sin = llm.rotary_emb(x, self.pos)
        for i, layer in enumerate(llm.layers):
            x = x + self._attend(layer.self_attn, layer.input_layernorm(x), cos, sin, i)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        hidden = llm.norm(x)[:, -1]
        self.token.copy_(_next_token(lm, hidden, self.allowed))
        self.out.index_copy_(1, self.col, self.token[:, None])
        self.idx.add_(1)
        self.col.add_(1)

    def _attend(self, attn: torch.nn.Module, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, i: int):
        shape = (h.shape[0], 1, -1, attn.head_dim)
        q = attn.q_proj(h).view(shape).transpose(1, 2)
        k = attn.k_proj(h).view(shape).transpose(1, 2)
        v = attn.v_proj(h).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        self.keys[i].index_copy_(2, self.idx, k)
        self.values[i].index_copy_(2, self.idx, v)
        groups = attn.num_key_value_groups
        keys, values = repeat_kv(self.keys[i], groups), repeat_kv(self.values[i], groups)
        a = torch.nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=self.mask, scale=attn.scaling)
        return attn.o_proj(a.transpose(1, 2).reshape(h.shape[0], 1, -1))

    def capture(self) -> None:
        """CUDA only: warm the step up on a side stream, then record it. The warm-up mutates the buffers,
        so the caller reloads the prefix afterwards."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_STEPS):
                self.step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.step()
        self.graph = graph

    def run(self) -> torch.Tensor:
        for _ in range(self.n_steps - 1):
            if self.graph is not None:
                self.graph.replay()
            else:
                self.step()
        return self.out


def _next_token(lm: torch.nn.Module, hidden: torch.Tensor, allowed: tuple[int, int] | None) -> torch.Tensor:
    if allowed is None:
        return lm.lm_head(hidden).float().argmax(-1)
    lo, hi = allowed
    return torch.nn.functional.linear(hidden, lm.lm_head.weight[lo:hi]).float().argmax(-1) + lo


class StaticDecodePool:
    """One StaticDecoder per (bucket, capacity, n_steps, allowed), built (and on CUDA captured) on first use."""

    def __init__(self, model: OpenVLAModel, *, use_graphs: bool | None = None):
        self.model = model
        device = next(model.parameters()).device
        self.use_graphs = device.type == "cuda" if use_graphs is None else use_graphs
        self.decoders: dict[tuple, StaticDecoder] = {}
        # A decoder's buffers (and graph) are one shared resource: two threads calling predict at once (the
        # service has one owner thread per model, but a library user may not) must take turns on it.
        self._lock = threading.Lock()

    @torch.inference_mode()
    def decode(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
               n_steps: int, allowed: tuple[int, int] | None, timings: dict[str, float] | None = None) -> torch.Tensor:
        batch, length = attention_mask.shape
        bucket = bucket_for(batch)
        if bucket is None:
            raise ValueError(f"batch {batch} is above the largest bucket {BUCKETS[-1]}")
        watch = Stopwatch(inputs_embeds.device)
        llm = self.model.language_model.model
        cache = DynamicCache(config=llm.config)
        out = llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                  use_cache=True, **cache_kwarg(llm, cache))
        first = _next_token(self.model.language_model, out.last_hidden_state[:, -1], allowed)
        watch.lap(timings, "prefill")
        # Room for every step, and for the capture's warm-up steps, which also write.
        key = (bucket, capacity_for(length + max(n_steps, WARMUP_STEPS + 1)), n_steps, allowed)
        with self._lock:
            dec = self.decoders.get(key)
            if dec is None:
                dec = self.decoders[key] = StaticDecoder(self.model, *key)
                if self.use_graphs:
                    dec.load_prefix(cache, attention_mask, position_ids, first)
                    try:
                        dec.capture()
                    except Exception:  # noqa: BLE001 (a capture we cannot make costs speed, never a request)
                        log.warning("OpenVLA decode: CUDA graph capture failed for bucket %d, capacity %d; "
                                    "stepping eagerly from now on", key[0], key[1], exc_info=True)
                        self.use_graphs = False
            dec.load_prefix(cache, attention_mask, position_ids, first)
            tokens = dec.run()[:batch].clone()
        watch.lap(timings, "decode")
        return tokens
