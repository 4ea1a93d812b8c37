"""A batched forward pass for Llama-family decoders over a transformers model's weights.

Why not call the transformers model itself: it computes logits at every position (SmolLM2's
lm_head is ~20% of its FLOPs per token), keeps a growing cache per request, and cannot mix
sequences at different positions, some decoding and some prefilling, in one call. Here every
row of an iteration is flattened into one token matrix, so each weight is read once per
iteration; keys and values go to a slot cache; logits are computed only where a token is
sampled; adapters apply per row.

Products: float32, or (`products=torch.bfloat16`, on CPUs that multiply bf16 natively) bf16
weights and operands with float32 accumulation, everything else float32 (BlockLinear). Decode
streams every weight once per step, so on CPU its speed is the weights' bytes over the memory
bandwidth: bf16 halves it. The LM head is the exception (OutputLinear): its float16 weights
are as few bytes, and its logits stay float32.

Batch invariance: a sequence's tokens are bitwise the same whether it runs alone or among 63
others. float32 products run with at least two rows (a one-row product takes a differently
rounded code path); half-precision products on CPU run on blocks of exactly BLOCK_ROWS rows;
attention reads keys in multiples of kv_cache.ALIGN, and prefill chunk boundaries do not depend
on load (the scheduler's job).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .batch import Step, align
from .kv_cache import SlotCache

# model_type -> how its attention and MLP projections are named
FUSED_QKV = {"phi3"}
SUPPORTED = {"llama", "mistral", "qwen2", "phi3"}


def unsupported_reason(config) -> str | None:
    """Why this decoder cannot run a model with `config`, or None if it can."""
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED:
        return f"model_type {kind!r} is not one of {sorted(SUPPORTED)}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r} is not silu"
    if getattr(config, "mlp_bias", False):
        return "MLP biases are not supported"
    return None


# Rows of every half-precision product on CPU. oneDNN's AMX kernels round a row differently
# with the product's row count (at SmolLM2's shapes, 2-32 rows take another path than 33 and
# more, and further boundaries move with the thread count); with the count fixed, a row's
# result depends neither on its position nor on its neighbours. 32 is the balance measured on
# SmolLM2 at 1 thread (CPU ms per step with blocks of 16 / 32 / 64 rows): one stream 40 / 44 /
# 51, 64 streams 146 / 124 / 94, a 256-token prompt chunk 354 / 270 / 241.
BLOCK_ROWS = 32


def _onednn(weight: torch.Tensor) -> bool:
    return weight.device.type == "cpu" and torch.backends.mkldnn.is_available()


class Linear:
    """y = x W^T + b in the weight's dtype, through oneDNN with its own copy of W on CPU.

    MKL's fp32 GEMM (torch's default on CPU) takes a slow path on some CPUs (2-3x slower than
    oneDNN here at 4-64 rows); oneDNN computes rows as batch-invariantly as MKL does, given at
    least two (the decoder pads its token matrix).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        weight = weight.detach()
        self.out_features, self.in_features = weight.shape
        self.device = weight.device
        self.bias = None if bias is None else bias.detach()
        self.copied = _onednn(weight)  # the model's tensor may be freed
        self.weight = weight.to_mkldnn() if self.copied else weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.copied:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


class Scratch:
    """Half-precision input blocks, one buffer per width, grown as needed and shared by every
    product of a decoder (they run one after another). Rows past the real ones keep whatever
    an earlier call left: finite numbers, whose results are dropped."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self.buffers: dict[int, torch.Tensor] = {}

    def rows(self, rows: int, width: int) -> torch.Tensor:
        buffer = self.buffers.get(width)
        if buffer is None or buffer.shape[0] < rows:
            buffer = self.buffers[width] = torch.zeros(rows, width, dtype=self.dtype)
        return buffer[:rows]


class BlockLinear:
    """y = x W^T + b with half-precision operands on CPU, in products of BLOCK_ROWS rows.

    W is held in the scratch's dtype (bf16), packed once in oneDNN's layout for the AMX and
    AVX512-BF16 kernels; x is rounded to it on the way in, the products accumulate in float32,
    y is rounded to it and widened back to x's dtype, and the bias is added in x's dtype.
    """

    copied = True

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, scratch: Scratch):
        weight = weight.detach()
        self.out_features, self.in_features = weight.shape
        self.device = weight.device
        self.scratch = scratch
        self.bias = None if bias is None else bias.detach()
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.to(scratch.dtype), BLOCK_ROWS)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        blocks = self.scratch.rows(-(-n // BLOCK_ROWS) * BLOCK_ROWS, self.in_features)
        blocks[:n].copy_(x)
        y = torch.empty(n, self.out_features, dtype=x.dtype)
        for start in range(0, n, BLOCK_ROWS):
            block = blocks[start : start + BLOCK_ROWS]
            out = torch.ops.mkldnn._linear_pointwise(block, self.weight, None, "none", [], "")
            y[start : start + BLOCK_ROWS].copy_(out[: n - start])
        return y if self.bias is None else y.add_(self.bias)


# float16's largest finite value: weights beyond it cannot be held in float16.
FLOAT16_MAX = 65504.0


class OutputLinear:
    """The LM head on the bf16-products path: y = x W^T + b with W held in float16 (fbgemm's
    packed layout) and x, the accumulation and y in float32.

    Why not bf16 there: a logit rounded to bf16 keeps 8 bits, steps of 1/8 at magnitudes 16-32,
    so two candidate tokens tie or swap and greedy decoding takes the wrong branch (SmolLM2 on
    an AMD EPYC answered "L'Étoile, la Marseillaise, ..." to the capital of France: its top two
    first-token logits are 0.08 apart in float32, equal in bf16). float16 weights are as few
    bytes as bf16 ones, so decode, which streams them, pays nothing for it; fbgemm's kernel runs
    on any AVX2 CPU, and a row's result depends neither on the row count nor its neighbours.
    """

    copied = True

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        weight = weight.detach().to(torch.float32)
        self.out_features, self.in_features = weight.shape
        self.device = weight.device
        bias = None if bias is None else bias.detach().to(torch.float32)
        self.packed = torch.ops.quantized.linear_prepack_fp16(weight, bias)

    @staticmethod
    def fits(weight: torch.Tensor) -> bool:
        """Whether this CPU runs fbgemm and every weight is finite in float16."""
        if (
            weight.device.type != "cpu"
            or "fbgemm" not in torch.backends.quantized.supported_engines
        ):
            return False
        return bool(weight.detach().abs().max() <= FLOAT16_MAX)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x.to(torch.float32), self.packed)


@dataclass
class Layer:
    device: torch.device
    ln1: torch.Tensor
    ln2: torch.Tensor
    eps: float
    qkv: Linear | BlockLinear  # [q + 2 kv, hidden]
    o: Linear | BlockLinear
    gate_up: Linear | BlockLinear  # [2 intermediate, hidden]: gate rows, then up rows
    down: Linear | BlockLinear
    window: int | None  # sliding-window attention span, if this layer has one


def _window(config, index: int) -> int | None:
    window = getattr(config, "sliding_window", None)
    if not window:
        return None
    types = getattr(config, "layer_types", None)
    if types:
        return window if types[index] == "sliding_attention" else None
    return window if config.model_type == "mistral" else None


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if x.dtype == torch.float32:
        # One fused kernel, bitwise what transformers' RMSNorm computes in float32.
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    # As transformers does it for half precision: float32 statistics, then back.
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    # Half-precision scores are normalized in float32, as transformers' eager attention does.
    if scores.dtype == torch.float32:
        return torch.softmax(scores, dim=-1)
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(scores.dtype)


def _signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """sin with its first half negated: rotate_half(x) * sin == roll(x, half) * this, exactly."""
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding on the first cos.shape[-1] features of each head (x: [N, heads, dim])."""
    rot = cos.shape[-1]
    x_rot, x_pass = (x, None) if rot == x.shape[-1] else (x[..., :rot], x[..., rot:])
    out = x_rot * cos + torch.roll(x_rot, rot // 2, dims=-1) * signed_sin
    return out if x_pass is None else torch.cat((out, x_pass), dim=-1)


class LlamaDecoder:
    """The forward pass. Holds the weights (taken from the transformers model), not the cache.

    `products`: the dtype of the matrix products' operands (default: the model's); on CPU a
    float32 model may take bf16 products, its weights then held in bf16 only.
    """

    def __init__(self, model, products: torch.dtype | None = None):
        config = model.config
        reason = unsupported_reason(config)
        if reason:
            raise ValueError(reason)
        self.config = config
        base = model.model
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.groups = self.heads // self.kv_heads
        self.q_size = self.heads * self.head_dim
        self.kv_size = self.kv_heads * self.head_dim
        self.intermediate = config.intermediate_size
        self.scaling = self.head_dim**-0.5
        self.vocab = config.vocab_size
        self.embed = base.embed_tokens.weight
        self.norm = base.norm.weight
        self.norm_eps = float(base.norm.variance_epsilon)
        self.rotary = base.rotary_emb
        self.dtype = self.embed.dtype
        self.products = products or self.dtype
        # Half-precision products on CPU go in blocks (see the module docstring).
        self.scratch = Scratch(self.products) if self.products != torch.float32 else None
        self.lm_head = self._output_linear(model.lm_head.weight)
        self.layers = [self._layer(config, i, m) for i, m in enumerate(base.layers)]
        self.devices = [layer.device for layer in self.layers]

    def _linear(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        if self.scratch is not None and _onednn(weight):
            return BlockLinear(weight, bias, self.scratch)
        return Linear(weight, bias)

    def _output_linear(self, weight: torch.Tensor):
        # Logits are never rounded to bf16 (see OutputLinear); float32 where fbgemm is missing.
        if self.scratch is None or not _onednn(weight):
            return self._linear(weight)
        if OutputLinear.fits(weight):
            try:
                return OutputLinear(weight)
            except RuntimeError:  # fbgemm built in, but this CPU lacks what it needs (AVX2)
                pass
        return Linear(weight)

    def _layer(self, config, index: int, module) -> Layer:
        attn, mlp = module.self_attn, module.mlp
        if config.model_type in FUSED_QKV:
            wqkv, bqkv = attn.qkv_proj.weight, attn.qkv_proj.bias
            wgu = mlp.gate_up_proj.weight
        else:
            wqkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
            biases = [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]
            bqkv = torch.cat(biases) if all(b is not None for b in biases) else None
            wgu = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
            # Drop the unfused copies: the fused ones are what runs.
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
                proj.weight = None
        layer = Layer(
            device=wqkv.device,
            ln1=module.input_layernorm.weight.detach(),
            ln2=module.post_attention_layernorm.weight.detach(),
            eps=float(module.input_layernorm.variance_epsilon),
            qkv=self._linear(wqkv, bqkv),
            o=self._linear(attn.o_proj.weight, attn.o_proj.bias),
            gate_up=self._linear(wgu),
            down=self._linear(mlp.down_proj.weight),
            window=_window(config, index),
        )
        if layer.qkv.copied:
            # oneDNN holds its own (packed) copies; free the model's.
            for proj in (attn.o_proj, mlp.down_proj, getattr(attn, "qkv_proj", None)):
                if proj is not None:
                    proj.weight = None
            if hasattr(mlp, "gate_up_proj"):
                mlp.gate_up_proj.weight = None
        return layer

    def new_cache(self, max_slots: int, initial_capacity: int = 256) -> SlotCache:
        return SlotCache(
            layers=len(self.layers),
            kv_heads=self.kv_heads,
            head_dim=self.head_dim,
            dtype=self.dtype,
            devices=self.devices,
            max_slots=max_slots,
            initial_capacity=initial_capacity,
        )

    @torch.inference_mode()
    def forward(self, step: Step, cache: SlotCache, adapters=None) -> torch.Tensor:
        """Run one iteration; return logits [sampling rows, vocab] in row order."""
        plan = _Plan(step, self)
        first = self.devices[0]
        ids = plan.ids.to(first)
        h = F.embedding(ids, self.embed)
        cos, sin = self.rotary(h, plan.positions.to(first)[None])
        cos, sin = cos[0][:, None, :], _signed_sin(sin[0][:, None, :])
        ranges = step.adapter_ranges() if adapters else []
        for index, layer in enumerate(self.layers):
            if layer.device != h.device:
                h = h.to(layer.device)
                cos, sin = cos.to(layer.device), sin.to(layer.device)
            h = self._layer_forward(index, layer, h, cos, sin, plan, cache, adapters, ranges)
        rows = plan.sample_index.to(h.device)
        hs = _rms_norm(h.index_select(0, rows), self.norm, self.norm_eps)
        if hs.device != self.lm_head.device:
            hs = hs.to(self.lm_head.device)
        logits = self.lm_head(hs)
        return logits[: plan.sampled]

    def _layer_forward(self, index, layer, h, cos, sin, plan, cache, adapters, ranges):
        n_real = plan.real_tokens
        x = _rms_norm(h, layer.ln1, layer.eps)
        qkv = layer.qkv(x)
        if ranges:
            adapters.apply(index, "qkv", x, qkv, ranges)
        # Queries and keys are adjacent in the fused projection: rotate them in one go.
        qk = qkv[:, : self.q_size + self.kv_size].view(
            -1, self.heads + self.kv_heads, self.head_dim
        )
        qk = _rotate(qk, cos, sin)
        q, k = qk[:, : self.heads], qk[:, self.heads :]
        v = qkv[:, self.q_size + self.kv_size :].view(-1, self.kv_heads, self.head_dim)

        keys, values = cache.keys[index], cache.values[index]
        slots, positions = plan.on(layer.device)
        keys[slots, :, positions] = k[:n_real]
        values[slots, :, positions] = v[:n_real]

        if plan.all_decode:
            # Every running sequence decodes, rows in slot order: no scatter or gather.
            attn = self._decode_all(layer, q, keys, values, plan).view(-1, self.q_size)
        else:
            out = torch.zeros_like(q)
            if plan.decode_rows:
                self._decode_attention(layer, q, out, keys, values, plan)
            for token_start, row in plan.prefill_rows:
                self._prefill_attention(layer, q, out, keys, values, token_start, row)
            attn = out.view(-1, self.q_size)
        o = layer.o(attn)
        if ranges:
            adapters.apply(index, "o", attn, o, ranges)
        h = h + o
        x = _rms_norm(h, layer.ln2, layer.eps)
        gu = layer.gate_up(x)
        if ranges:
            adapters.apply(index, "gate_up", x, gu, ranges)
        act = F.silu(gu[:, : self.intermediate]) * gu[:, self.intermediate :]
        d = layer.down(act)
        if ranges:
            adapters.apply(index, "down", act, d, ranges)
        return h + d

    def _attend(self, layer, qd, keys, values, plan) -> torch.Tensor:
        """Decode attention of slots [0, n) (qd: [n, kv_heads, groups, dim])."""
        slots, length = qd.shape[0], plan.decode_length
        k = keys[:slots, :, :length]
        v = values[:slots, :, :length]
        scores = torch.matmul(qd, k.transpose(-1, -2)).mul_(self.scaling)
        scores.masked_fill_(plan.decode_mask(layer.device, layer.window), float("-inf"))
        return torch.matmul(_softmax(scores), v)

    def _decode_all(self, layer, q, keys, values, plan) -> torch.Tensor:
        n = plan.real_tokens
        qd = q[:n].reshape(n, self.kv_heads, self.groups, self.head_dim)
        out = self._attend(layer, qd, keys, values, plan).view(n, self.heads, self.head_dim)
        if q.shape[0] > n:  # the padding row (see _Plan) keeps the products two rows tall
            out = torch.cat([out, out.new_zeros(q.shape[0] - n, self.heads, self.head_dim)])
        return out

    def _decode_attention(self, layer, q, out, keys, values, plan) -> None:
        """One new token for each of many sequences: batched over the cache's first slots."""
        device = layer.device
        token_index, slot_index, lengths = plan.decode_tensors(device)
        slots = plan.slots
        length = plan.decode_length
        # Grouped-query trick: the `groups` query heads sharing a key head act as a short query
        # sequence against that head, so keys are never repeated.
        qd = torch.zeros(slots, self.heads, self.head_dim, dtype=q.dtype, device=device)
        qd[slot_index] = q.index_select(0, token_index)
        qd = qd.view(slots, self.kv_heads, self.groups, self.head_dim)
        od = self._attend(layer, qd, keys, values, plan).view(slots, self.heads, self.head_dim)
        out[token_index] = od.index_select(0, slot_index)
        del lengths, length

    def _prefill_attention(self, layer, q, out, keys, values, token_start, row) -> None:
        """A chunk of one prompt against everything cached for it so far (causal)."""
        n = len(row.tokens)
        length = align(row.end)
        qr = q[token_start : token_start + n]  # [n, heads, dim]
        qr = qr.view(n, self.kv_heads, self.groups, self.head_dim).permute(1, 2, 0, 3)
        qr = qr.reshape(self.kv_heads, self.groups * n, self.head_dim)
        k = keys[row.slot, :, :length]
        v = values[row.slot, :, :length]
        scores = torch.matmul(qr, k.transpose(-1, -2)).mul_(self.scaling)
        key_pos = torch.arange(length, device=q.device)
        query_pos = torch.arange(row.start, row.end, device=q.device)
        blocked = key_pos[None, :] > query_pos[:, None]
        if layer.window:
            blocked |= key_pos[None, :] <= query_pos[:, None] - layer.window
        blocked = blocked[None].expand(self.groups, n, length).reshape(1, self.groups * n, length)
        scores.masked_fill_(blocked, float("-inf"))
        o = torch.matmul(_softmax(scores), v)  # [kv_heads, groups * n, dim]
        o = o.view(self.kv_heads, self.groups, n, self.head_dim).permute(2, 0, 1, 3)
        out[token_start : token_start + n] = o.reshape(n, self.heads, self.head_dim)


class _Plan:
    """The step as index tensors (built once per iteration, moved per device on demand)."""

    def __init__(self, step: Step, decoder: LlamaDecoder):
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        sample: list[int] = []
        self.decode_rows: list[tuple[int, int, int]] = []  # (token index, slot, new length)
        self.prefill_rows = []
        for row in step.rows:
            start = len(ids)
            ids.extend(row.tokens)
            positions.extend(range(row.start, row.end))
            slots.extend([row.slot] * len(row.tokens))
            if len(row.tokens) == 1:
                self.decode_rows.append((start, row.slot, row.end))
            else:
                self.prefill_rows.append((start, row))
            if row.sample:
                sample.append(len(ids) - 1)
        self.real_tokens = len(ids)
        self.sampled = len(sample)
        # Never a one-row matrix product (see the module docstring): pad with a dummy token
        # whose key and value are not cached and whose logits are dropped.
        if len(ids) < 2:
            ids.append(0)
            positions.append(0)
        while len(sample) < 2:
            sample.append(0)
        self.ids = torch.tensor(ids)
        self.positions = torch.tensor(positions)
        self.sample_index = torch.tensor(sample)
        self._slots = torch.tensor(slots)
        self._positions = torch.tensor(positions[: self.real_tokens])
        self.slots = step.slots
        self.decode_length = align(max((r[2] for r in self.decode_rows), default=1))
        # The common steady state: one token for every slot, row i in slot i.
        self.all_decode = (
            not self.prefill_rows
            and len(self.decode_rows) == step.slots
            and all(r[0] == i and r[1] == i for i, r in enumerate(self.decode_rows))
        )
        self._per_device: dict = {}
        self._decode: dict = {}
        self._masks: dict = {}

    def on(self, device):
        if device not in self._per_device:
            self._per_device[device] = (self._slots.to(device), self._positions.to(device))
        return self._per_device[device]

    def decode_tensors(self, device):
        if device not in self._decode:
            tokens = torch.tensor([r[0] for r in self.decode_rows], device=device)
            slots = torch.tensor([r[1] for r in self.decode_rows], device=device)
            lengths = torch.ones(self.slots, dtype=torch.long)
            for _, slot, length in self.decode_rows:
                lengths[slot] = length
            self._decode[device] = (tokens, slots, lengths.to(device))
        return self._decode[device]

    def decode_mask(self, device, window: int | None):
        key = (device, window)
        if key not in self._masks:
            _, _, lengths = self.decode_tensors(device)
            pos = torch.arange(self.decode_length, device=device)[None, :]
            blocked = pos >= lengths[:, None]
            if window:
                blocked |= pos <= (lengths[:, None] - 1) - window
            self._masks[key] = blocked[:, None, None, :]
        return self._masks[key]
