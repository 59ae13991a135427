"""The fast path: a Llama-family decoder written for serving (SmolLM2 is one).

transformers' generic model spends a good part of a CPU decode step in Python and
small ops (mask building, cache bookkeeping, PEFT wrappers around 210 Linear layers).
This decoder does the same arithmetic with fewer, larger calls: q/k/v and gate/up
fused into one matmul each, packed weights (:mod:`carafe.adapters.quant`), LoRA as
gathered per-row deltas (:mod:`carafe.adapters.lora_set`) and a KV cache that grows
in place instead of concatenating every step. It takes the arguments the scheduler
gives a transformers model (``input_ids``, ``attention_mask``, ``position_ids``,
``cache``, ``logits_to_keep``, ``adapter_names``) so the batching code is shared.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F

from carafe.adapters import native
from carafe.adapters.errors import InvalidAdapter, ModelNotAvailable
from carafe.adapters.kv_cache import BLOCK, KVCache
from carafe.adapters.kv_rows import RowKV
from carafe.adapters.lora_set import MODULES, LoraSet, LoraWeights, RowDeltas
from carafe.adapters.quant import PackedLinear, Quantize
from carafe.adapters.weights import TensorFiles

log = logging.getLogger("carafe.adapters.decoder")
Kernels = Literal["auto", "native", "torch"]
NATIVE_MAX_RANK = 64  # LoRA ranks the native pass serves (carafe/adapters/csrc/vecmath.h: lora_add)


class Weights(Protocol):
    """A model's tensors by state-dict name: a state dict, or :class:`~carafe.adapters.weights.TensorFiles`."""

    def __getitem__(self, name: str, /) -> torch.Tensor: ...
    def __contains__(self, name: object, /) -> bool: ...


def _rows(weights: Weights, name: str, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of a weight, read alone where the source can (:class:`TensorFiles`)."""
    if isinstance(weights, TensorFiles):
        return weights.rows(name, start, stop)
    return weights[name][start:stop]


@dataclass(slots=True)
class DecoderOutput:
    logits: torch.Tensor


@dataclass(slots=True)
class _Layer:
    attn_norm: torch.Tensor
    qkv: PackedLinear
    o: PackedLinear
    mlp_norm: torch.Tensor
    gate_up: PackedLinear
    down: PackedLinear


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaDecoder:
    """Llama-architecture causal LM on packed weights with per-row LoRA."""

    takes_adapter_names = True  # the scheduler passes one adapter name per row, always

    def __init__(self, config: Any, weights: Weights, quantize: Quantize, kernels: Kernels = "auto") -> None:
        """``config``: the model's transformers config; ``weights``: its tensors by state-dict name,
        each read (and packed) once, so a :class:`~carafe.adapters.weights.TensorFiles` never holds
        more than one fp32 tensor at a time."""
        cfg = config
        if (
            getattr(cfg, "model_type", None) not in ("llama", "mistral", "qwen2")
            or getattr(cfg, "attention_bias", False)
            or getattr(cfg, "mlp_bias", False)
            or getattr(cfg, "hidden_act", "silu") != "silu"
        ):
            raise ModelNotAvailable(
                f"the fast path serves Llama-style models; {cfg.model_type} needs adapters.engine.quantize: none",
                param="model",
            )
        rope = getattr(cfg, "rope_parameters", None) or {
            "rope_type": "default",
            "rope_theta": getattr(cfg, "rope_theta", 10000.0),
        }
        if rope.get("rope_type", "default") != "default":
            raise ModelNotAvailable(
                f"the fast path has no {rope['rope_type']} RoPE scaling; use adapters.engine.quantize: none",
                param="model",
            )
        self.config = cfg
        self.quantize = quantize
        # int4's kernel computes each row alone and prefill attention runs on whole blocks, so a
        # pass of two or more tokens gives each token the same KV and logits wherever a prompt is
        # cut (chunks, a prefix-cache hit); bf16/int8 matmuls sum in an order set by the pass length
        self.split_exact = quantize == "int4"
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = float(cfg.rms_norm_eps)
        self.inv_freq = 1.0 / (float(rope["rope_theta"]) ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))

        # int4 on Carafe's native kernels when they build here (else torch's int4 kernel)
        use_native = quantize == "int4" and kernels != "torch" and self._native_kernels(kernels)

        def sd(name: str) -> torch.Tensor:
            return weights[name].detach().float()

        def packed(w: torch.Tensor, mode: Quantize = quantize, keep_dense: bool = True) -> PackedLinear:
            return PackedLinear(w, mode, keep_dense=keep_dense, native=use_native)

        self.layers: list[_Layer] = []
        for i in range(cfg.num_hidden_layers):
            p = f"model.layers.{i}."
            self.layers.append(
                _Layer(
                    attn_norm=sd(p + "input_layernorm.weight"),
                    qkv=packed(torch.cat([sd(p + f"self_attn.{n}_proj.weight") for n in "qkv"])),
                    o=packed(sd(p + "self_attn.o_proj.weight")),
                    mlp_norm=sd(p + "post_attention_layernorm.weight"),
                    gate_up=packed(torch.cat([sd(p + "mlp.gate_proj.weight"), sd(p + "mlp.up_proj.weight")])),
                    down=packed(sd(p + "mlp.down_proj.weight")),
                )
            )
        self.norm = sd("model.norm.weight")
        # int4's output head stays int8 (an int4 head costs +7.6 % perplexity), dequantized per use
        head: Quantize = "int8" if quantize == "int4" else quantize

        def table(name: str) -> PackedLinear:
            rows = int(weights.shape(name)[0]) if isinstance(weights, TensorFiles) else int(weights[name].shape[0])
            if use_native and rows % 16 == 0 and cfg.hidden_size % 32 == 0:  # packed slice by slice
                return PackedLinear.native_int8_from_rows(lambda a, b: _rows(weights, name, a, b), rows)
            return packed(sd(name), head, keep_dense=quantize != "int4")

        self.embed = table("model.embed_tokens.weight")
        tied = getattr(cfg, "tie_word_embeddings", False) or "lm_head.weight" not in weights
        self.lm_head = self.embed if tied else table("lm_head.weight")
        self.loras = LoraSet()
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self._qkv_split = (q, kv, kv)
        self._gate = cfg.intermediate_size
        half = self.head_dim // 2  # rotate_half(x) · sin == roll(x, half) · (sin with its first half negated)
        self._rope_sign = torch.cat([-torch.ones(half), torch.ones(half)])
        self._native = self._native_step() if use_native else None

    @property
    def kernels(self) -> str:
        """Which kernels serve the packed weights: ``native`` (Carafe's), or ``torch``."""
        return "native" if self._native is not None else "torch"

    def _native_step(self) -> Any:
        """The C++ forward pass on the same packed tensors (None when a shape kept torch's layout)."""
        linears = [x for layer in self.layers for x in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        if not all(x.native and x.mode == "int4" for x in linears) or not (self.embed.native and self.lm_head.native):
            return None
        cfg = self.config
        tensors: list[torch.Tensor] = []
        for layer in self.layers:
            tensors += [layer.attn_norm, layer.qkv.weight, layer.o.weight, layer.mlp_norm, layer.gate_up.weight]
            tensors.append(layer.down.weight)
        assert self.embed.scales is not None and self.lm_head.scales is not None
        tensors += [self.norm, self.embed.weight, self.embed.scales, self.lm_head.weight, self.lm_head.scales]
        tensors.append(self.inv_freq.float().contiguous())
        dims = [len(self.layers), cfg.hidden_size, self.heads, self.kv_heads, self.head_dim, self._gate]
        dims.append(self.lm_head.out_features)
        return torch.classes.carafe.Decoder([t.contiguous() for t in tensors], dims, self.eps)

    @staticmethod
    def _native_kernels(kernels: Kernels) -> bool:
        """Whether int4 runs natively: ``native`` insists (an error if they cannot be built), ``auto`` takes
        them where they build with AVX512-VNNI (their portable loops are slower than torch's kernel)."""
        reason = native.load()
        if reason is None and (kernels == "native" or torch.ops.carafe.vnni()):
            return True
        if kernels == "native":
            raise ModelNotAvailable(f"adapters.engine.kernels is native, but {reason}", param="model")
        reason = reason or "this CPU has no AVX512-VNNI"
        log.warning("int4 runs on torch's kernel, slower than the native one: %s (adapters.engine.kernels)", reason)
        return False

    @classmethod
    def from_model(cls, model: Any, quantize: Quantize, kernels: Kernels = "auto") -> LlamaDecoder:
        """The fast decoder on a loaded transformers model's weights (tests, benchmarks)."""
        return cls(model.config, model.state_dict(), quantize, kernels)

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """``module name -> (in, out)`` of the Linear layers the transformers model would have (adapter checks)."""
        cfg, hidden = self.config, self.config.hidden_size
        q, kv, _ = self._qkv_split
        shapes = {"lm_head": (hidden, cfg.vocab_size)}
        for i in range(len(self.layers)):
            p = f"model.layers.{i}."
            shapes |= {p + f"self_attn.{n}_proj": (hidden, w) for n, w in (("q", q), ("k", kv), ("v", kv))}
            shapes[p + "self_attn.o_proj"] = (q, hidden)
            shapes |= {p + f"mlp.{n}_proj": (hidden, cfg.intermediate_size) for n in ("gate", "up")}
            shapes[p + "mlp.down_proj"] = (cfg.intermediate_size, hidden)
        return shapes

    @property
    def nbytes(self) -> int:
        linears = [x for layer in self.layers for x in (layer.qkv, layer.o, layer.gate_up, layer.down)]
        heads = [self.embed] if self.lm_head is self.embed else [self.embed, self.lm_head]
        return sum(x.nbytes for x in [*linears, *heads])

    def new_cache(self) -> KVCache:
        return KVCache(len(self.layers))

    def __call__(self, **kw: Any) -> DecoderOutput:
        return self.forward(**kw)

    def _project(
        self, w: PackedLinear, x: torch.Tensor, lora: RowDeltas | None, layer: int, parts: tuple[tuple[str, int], ...]
    ) -> torch.Tensor:
        out = w(x)
        return out if lora is None else self._add_lora(out, lora, layer, x, parts)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: KVCache,
        use_cache: bool = True,
        logits_to_keep: int = 0,
        adapter_names: list[str] | None = None,
    ) -> DecoderOutput:
        rows, seq = input_ids.shape
        lora = self.loras.plan(adapter_names)
        if seq == 1 and self.quantize != "none":
            return self._decode(input_ids, attention_mask, position_ids, cache, lora)
        h = self.embed.rows(input_ids)
        freqs = position_ids[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]
        cos, sin = emb.cos(), emb.sin()
        total = attention_mask.shape[1]
        # queries and keys padded to whole blocks (see BLOCK); causal over the new tokens, and
        # each query attends itself, so left-padded rows and the padding queries stay finite
        seq_p, total_p = -(-seq // BLOCK) * BLOCK, -(-total // BLOCK) * BLOCK
        cols = torch.arange(total_p)
        qpos = torch.arange(total - seq, total - seq + seq_p)[:, None]
        valid = F.pad(attention_mask, (0, total_p - total)).bool()[:, None, None, :]
        valid = (valid & (cols <= qpos)) | (cols == qpos) | ((qpos >= total) & (cols == 0))
        q_w, kv_w, _ = self._qkv_split
        qkv_parts = (("q_proj", q_w), ("k_proj", kv_w), ("v_proj", kv_w))
        mlp_parts = (("gate_proj", self._gate), ("up_proj", self._gate))
        for i, layer in enumerate(self.layers):
            x = F.rms_norm(h, (h.shape[-1],), layer.attn_norm, self.eps)
            q, k, v = self._project(layer.qkv, x, lora, i, qkv_parts).split(self._qkv_split, dim=-1)  # type: ignore[no-untyped-call]  # torch/transformers typing
            q = q.view(rows, seq, self.heads, self.head_dim).transpose(1, 2)
            k = k.view(rows, seq, self.kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(rows, seq, self.kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            cache.layers[i].append(k, v)
            keys, values = (t.float() for t in cache.layers[i].padded(total_p))
            q = F.pad(q, (0, 0, 0, seq_p - seq))
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=valid, enable_gqa=True)
            attn = attn[:, :, :seq].transpose(1, 2).reshape(rows, seq, q_w)
            h = h + self._project(layer.o, attn, lora, i, (("o_proj", h.shape[-1]),))
            x = F.rms_norm(h, (h.shape[-1],), layer.mlp_norm, self.eps)
            gate, up = self._project(layer.gate_up, x, lora, i, mlp_parts).split(self._gate, dim=-1)  # type: ignore[no-untyped-call]  # torch/transformers typing
            h = h + self._project(layer.down, F.silu(gate) * up, lora, i, (("down_proj", h.shape[-1]),))
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        return DecoderOutput(self.lm_head(F.rms_norm(h, (h.shape[-1],), self.norm, self.eps)))

    def _decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: KVCache,
        lora: RowDeltas | None,
    ) -> DecoderOutput:
        """One new token per row: the same arithmetic as :meth:`forward` in about half the calls
        (q and k rotated together, bf16 between the packed matmuls, one mask for all layers)."""
        rows, hidden, dim = input_ids.shape[0], self.config.hidden_size, self.head_dim
        q_w, kv_w, _ = self._qkv_split
        qk_heads = self.heads + self.kv_heads
        mlp_parts = (("gate_proj", self._gate), ("up_proj", self._gate))
        h = self.embed.rows(input_ids)
        freqs = position_ids[..., None].float() * self.inv_freq  # (rows, 1, dim/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (rows, 1, dim): broadcast over the q and k heads
        cos, sin = emb.cos(), emb.sin() * self._rope_sign
        # one additive mask for all layers; always one, padded or not: attention with and without a
        # mask sums in different orders, and a row's tokens must not depend on its neighbours' padding
        mask = torch.zeros(attention_mask.shape, dtype=torch.float32)
        mask = mask.masked_fill_(attention_mask == 0, float("-inf"))[:, None, None, :]
        for i, layer in enumerate(self.layers):
            x = F.rms_norm(h, (hidden,), layer.attn_norm, self.eps)
            qkv = layer.qkv.project(x).float()
            if lora is not None:
                qkv = self._add_lora(qkv, lora, i, x, (("q_proj", q_w), ("k_proj", kv_w), ("v_proj", kv_w)))
            qk = qkv[..., : q_w + kv_w].view(rows, qk_heads, dim)
            qk = torch.addcmul(qk * cos, torch.roll(qk, dim // 2, dims=-1), sin)
            k = qk[:, self.heads :, None]
            v = qkv[..., q_w + kv_w :].view(rows, self.kv_heads, 1, dim)
            keys, values = (t.float() for t in cache.layers[i].append(k, v))
            attn = F.scaled_dot_product_attention(
                qk[:, : self.heads, None], keys, values, attn_mask=mask, enable_gqa=True
            )
            attn = attn.reshape(rows, 1, q_w)  # (rows, heads, 1, dim): one token, heads already in order
            o = layer.o.project(attn)
            if lora is not None:
                o = self._add_lora(o.float(), lora, i, attn, (("o_proj", hidden),))
            h = h + o
            x = F.rms_norm(h, (hidden,), layer.mlp_norm, self.eps)
            gate_up = layer.gate_up.project(x).float()  # fp32 with or without LoRA: rows agree either way
            if lora is not None:
                gate_up = self._add_lora(gate_up, lora, i, x, mlp_parts)
            gate, up = gate_up.split(self._gate, dim=-1)  # type: ignore[no-untyped-call]  # torch/transformers typing
            act = F.silu(gate) * up
            down = layer.down.project(act)
            if lora is not None:
                down = self._add_lora(down.float(), lora, i, act, (("down_proj", hidden),))
            h = h + down
        return DecoderOutput(self.lm_head(F.rms_norm(h, (hidden,), self.norm, self.eps)))

    @property
    def row_kv(self) -> bool:
        """Passes run natively on per-row KV (:meth:`new_row`, :meth:`forward_rows`)."""
        return self._native is not None

    def new_row(self, capacity: int = 0) -> RowKV:
        """An empty row with room for ``capacity`` columns."""
        return RowKV(len(self.layers), self.kv_heads, self.head_dim, capacity)

    def add_adapter(self, name: str, weights: LoraWeights) -> None:
        """Make adapter ``name`` selectable per row (prefill and decode)."""
        rank = max((a.shape[1] for a, _ in weights.pairs.values()), default=0)
        if self._native is not None and rank > NATIVE_MAX_RANK:
            raise InvalidAdapter(
                f"adapter rank {rank} is over {NATIVE_MAX_RANK}, the most the native int4 path serves; "
                "use adapters.engine.kernels: torch (or quantize: none) for it",
                param="path",
            )
        adapter_id = self.loras.add(name, weights)
        if self._native is not None:
            empty = torch.empty(0)
            pairs = [weights.pairs.get((i, m)) for i in range(len(self.layers)) for m in MODULES]
            self._native.add_adapter(
                adapter_id, [p[0] if p else empty for p in pairs], [p[1] if p else empty for p in pairs]
            )

    def remove_adapter(self, name: str) -> None:
        adapter_id = self.loras.remove(name)
        if self._native is not None and adapter_id is not None:
            self._native.remove_adapter(adapter_id)

    def forward_rows(
        self,
        tokens: list[list[int]],
        rows: list[RowKV],
        adapter_names: list[str] | None = None,
        all_logits: bool = False,
    ) -> torch.Tensor:
        """One native pass: row ``i`` brings ``tokens[i]`` (a prompt chunk, or one token to decode), appended to
        ``rows[i]`` in place. Returns the logits of each row's last new token (rows, vocab), or of every new
        token (all tokens, vocab) with ``all_logits``."""
        assert self._native is not None and len(tokens) == len(rows)
        adapters = self.loras.row_ids(adapter_names)
        counts = [len(t) for t in tokens]
        for row, n in zip(rows, counts):
            row.reserve(n)
        logits = self._native.forward(
            torch.tensor([t for chunk in tokens for t in chunk], dtype=torch.long),
            torch.tensor(counts, dtype=torch.long),
            [row.buffer for row in rows],
            torch.tensor([row.length for row in rows], dtype=torch.long),
            adapters if adapters is not None else torch.empty(0, dtype=torch.long),
            all_logits,
        )
        for row, n in zip(rows, counts):
            row.length += n
        return logits  # type: ignore[no-any-return]  # torch.classes typing

    @staticmethod
    def _add_lora(
        out: torch.Tensor, lora: RowDeltas, layer: int, x: torch.Tensor, parts: tuple[tuple[str, int], ...]
    ) -> torch.Tensor:
        start = 0
        for name, width in parts:
            delta = lora.delta((layer, name), x.float())
            if delta is not None:
                out[..., start : start + width] += delta
            start += width
        return out
