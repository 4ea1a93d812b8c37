"""The pieces of the training step that decide its speed and memory on CPU.

- `document_attention`: attention over a packed row, one causal SDPA call per document, so no
  token attends across documents and no (T x T) mask is built. SDPA over the whole flattened
  row with a block-diagonal mask was measured 7x slower per layer on this CPU.
  `document_attention_bf16` does the same with bf16 products where the CPU has them.
- `route_4bit_layers`: 4-bit layers keep a fixed float32 path on CPU (see there). Caching the
  dequantized weights was tried: it saves the two dequantizations per step (~0.1 s) but holds
  0.4 GB more, which the peer's peak memory does not leave room for; more tokens per step
  amortize the dequantization better.
- `fuse_lora`: a LoRA layer computes x (W + s B A)^T, one product, where peft adds the adapter's
  output to the base layer's. CPUs that multiply bf16 natively (AVX512-BF16, AMX) take
  `grouped.fuse` instead: bf16 operands with float32 accumulation, 4x the float32 rate there
  (917 vs 215 GFLOP/s at the model's shapes on an AMD EPYC), the same compute dtype as QLoRA on
  GPUs. Elsewhere bf16 products are emulated, about 10x slower.
- `fuse_norms`, `fuse_swiglu`: RMSNorm and SiLU-gated MLPs that keep only their inputs for the
  backward pass (transformers' versions keep 2-3 intermediates each): about a third less
  activation memory per token, which buys more tokens per step within the peer's peak memory.
- `selected_token_loss`: cross-entropy on the target positions only, in chunks, with the input
  gradient computed in the same pass: the (tokens x vocabulary) logits are never all alive at
  once, and the positions that carry no loss (prompts) never reach the output layer.
"""

from __future__ import annotations

import functools
import itertools
import types

import torch
import torch.nn.functional as F

ATTENTION = "kaito_document_sdpa"
ATTENTION_BF16 = "kaito_document_attention_bf16"
BOUNDS_KWARG = "kaito_document_bounds"


def _documents(query, key, value, bounds):
    """(q, k, v) per document of a packed row; split, not sliced: the backward of a split is
    one concatenation, where each slice's backward would allocate a zero tensor of the row."""
    if bounds is None or len(bounds) <= 2:
        return [(query, key, value)]
    lengths = [e - s for s, e in itertools.pairwise(bounds)]
    return list(zip(query.split(lengths, dim=2), key.split(lengths, dim=2),
                    value.split(lengths, dim=2), strict=True))  # fmt: skip


def document_attention(
    module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs
):
    """transformers attention interface: query (B, H, T, D), key/value (B, Hkv, T, D)."""
    gqa = query.shape[1] != key.shape[1]  # SDPA's GQA path: as fast, and k/v stay unexpanded
    parts = _documents(query, key, value, kwargs.get(BOUNDS_KWARG))
    outs = [
        F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=gqa)
        for q, k, v in parts
    ]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


# Below this many tokens SDPA's float32 kernel is the faster (48 tokens: 0.28 vs 0.32 ms).
SHORT_DOCUMENT = 64


def document_attention_bf16(
    module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs
):
    """document_attention with _CausalAttentionBF16 for each document (CPU, float32 inputs)."""
    if query.dtype != torch.float32 or query.shape[0] != 1 or (dropout and module.training):
        return document_attention(module, query, key, value, attention_mask, scaling, dropout,
                                  **kwargs)  # fmt: skip
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    parts = _documents(query, key, value, kwargs.get(BOUNDS_KWARG))
    gqa = query.shape[1] != key.shape[1]
    outs = [
        _CausalAttentionBF16.apply(q, k, v, scale)
        if q.shape[2] >= SHORT_DOCUMENT
        else F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        for q, k, v in parts
    ]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs):
    return None  # document_attention is causal per document by construction


def register_attention(bf16_products: bool = False) -> str:
    """Register our attention with transformers; the name to pass to set_attn_implementation."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    name, function = (
        (ATTENTION_BF16, document_attention_bf16)
        if bf16_products
        else (ATTENTION, document_attention)
    )
    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, _no_mask)
    return name


def _zero_padded(x, rows: int, dim: int = 0, dtype=None):
    """x as a contiguous `dtype` tensor with zeros appended along `dim` up to `rows` long."""
    dtype = dtype or x.dtype
    if x.shape[dim] >= rows:
        return x.to(dtype).contiguous()
    shape = list(x.shape)
    shape[dim] = rows
    out = x.new_zeros(shape, dtype=dtype)
    out.narrow(dim, 0, x.shape[dim]).copy_(x)
    return out


@functools.lru_cache(maxsize=64)
def _causal_bias(rows: int, group: int):
    """0 where a query may see a key, -inf after it: (group x rows, rows) bf16, for `group`
    query heads stacked on one key head. Added by the scores' product itself (baddbmm), where a
    masked_fill would be a pass of its own over them."""
    future = torch.ones(rows, rows, dtype=torch.bool).triu_(1)
    bias = torch.zeros(rows, rows, dtype=torch.bfloat16).masked_fill_(future, float("-inf"))
    return bias.repeat(group, 1)


class _CausalAttentionBF16(torch.autograd.Function):
    """Causal attention over one document: q (1, H, L, D), k and v (1, Hkv, L, D), float32.

    All six products take bf16 operands with float32 accumulation, as flash attention does on
    GPUs, and the softmax reads bf16 scores and computes in float32. A key head's query heads
    stack into one (G L, D) matrix, so grouped-query attention copies no keys; the scale rides
    on q's conversion to bf16 and the causal mask on the scores' product. Lengths are padded to
    ROW_MULTIPLE (zeros after the end: no real query sees them). At SmolLM2's shapes, forward
    and backward, 320 tokens: 2.0 ms, against 5.8 for SDPA's float32 flash kernel and 9.3 for
    this kernel with float32 scores (medians on an AMD EPYC, 2 threads)."""

    @staticmethod
    def forward(ctx, q, k, v, scale):
        _, heads, length, dim = q.shape
        kv_heads = k.shape[1]
        rows, bf16 = _padded(length), torch.bfloat16
        qg = q.new_zeros(heads, rows, dim, dtype=bf16)
        torch.mul(q[0], scale, out=qg[:, :length])
        qg = qg.view(kv_heads, -1, dim)  # (Hkv, G rows, D), scaled
        kp = _zero_padded(k[0], rows, dim=1, dtype=bf16)
        vp = _zero_padded(v[0], rows, dim=1, dtype=bf16)
        bias = _causal_bias(rows, heads // kv_heads)
        probs = torch.softmax(torch.baddbmm(bias, qg, kp.transpose(1, 2)), dim=-1)
        out = torch.bmm(probs, vp).float()
        ctx.save_for_backward(qg, kp, vp, probs, out)
        ctx.scale = scale
        return out.view(1, heads, rows, dim)[:, :, :length]

    @staticmethod
    def backward(ctx, grad):
        qg, kp, vp, probs, out = ctx.saved_tensors
        _, heads, length, dim = grad.shape
        kv_heads, rows = kp.shape[0], kp.shape[1]
        dout = _zero_padded(grad[0], rows, dim=1).view(kv_heads, -1, dim)
        delta = (dout * out).sum(-1, keepdim=True).to(torch.bfloat16)
        dout = dout.to(torch.bfloat16)
        dv = torch.bmm(probs.transpose(1, 2), dout)
        # dS = P (dP - delta): bf16 like dP itself, whose rounding the subtraction does not grow.
        dscores = torch.bmm(dout, vp.transpose(1, 2)).sub_(delta).mul_(probs)
        dq = torch.bmm(dscores, kp).float().mul_(ctx.scale).view(1, heads, rows, dim)
        dk = torch.bmm(dscores.transpose(1, 2), qg)  # qg carries the scale
        return dq[:, :, :length], dk[None, :, :length].float(), dv[None, :, :length].float(), None


class _Dequantize4bit(torch.autograd.Function):
    """y = x W^T for a frozen 4-bit W, dequantized in the forward and again in the backward."""

    @staticmethod
    def forward(ctx, x, packed, quant_state, bias):
        import bitsandbytes.functional as bnbf

        ctx.packed, ctx.quant_state = packed, quant_state
        weight = bnbf.dequantize_4bit(packed, quant_state).to(x.dtype)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        import bitsandbytes.functional as bnbf

        weight = bnbf.dequantize_4bit(ctx.packed, ctx.quant_state).to(grad.dtype)
        return grad @ weight, None, None, None


def _linear4bit_forward(self, x):
    return _Dequantize4bit.apply(x, self.weight.data, self.weight.quant_state, self.bias)


def route_4bit_layers(model) -> int:
    """Send bitsandbytes' 4-bit linear layers on CPU through _Dequantize4bit.

    The same arithmetic as bitsandbytes' own training path, minus one trap: in eval mode (our
    evaluation) bitsandbytes repacks the weights, for good, for a bf16 CPU kernel that the
    training steps after it would then use too.
    """
    import bitsandbytes as bnb

    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and module.weight.device.type == "cpu":
            module.forward = types.MethodType(_linear4bit_forward, module)
            count += 1
    return count


def _dense_weight(base):
    """The frozen (out, in) weight of a LoRA layer's base, float, freshly made for 4-bit bases."""
    import bitsandbytes as bnb

    if isinstance(base, bnb.nn.Linear4bit):
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(base.weight.data, base.weight.quant_state), True
    return base.weight, False


def _merged_weight(base, lora_a, lora_b, scale):
    weight, fresh = _dense_weight(base)
    weight = weight.to(lora_a.dtype)
    # W + s B A: one (out x r x in) product, a few percent of the layer's own at 512 tokens.
    if fresh:
        return weight.addmm_(lora_b, lora_a, alpha=scale)
    return torch.addmm(weight, lora_b, lora_a, alpha=scale)


class _LoRALinear(torch.autograd.Function):
    """y = x (W + s B A)^T + b for a frozen W (4-bit or dense) and trainable A (r, in), B (out, r).

    One full-size product per direction instead of peft's base product, defensive clone, two
    skinny products, scale and add: the extra passes over the (tokens x out) output and their
    transients cost 6% of the benchmark's step and 0.37 GB of its peak memory. The merged weight
    is rebuilt in the backward rather than kept, so memory holds only x, as peft's path does.
    """

    @staticmethod
    def forward(ctx, x, lora_a, lora_b, base, scale):
        ctx.base, ctx.scale = base, scale
        ctx.save_for_backward(x, lora_a, lora_b)
        return F.linear(x, _merged_weight(base, lora_a, lora_b, scale), base.bias)

    @staticmethod
    def backward(ctx, grad):
        x, lora_a, lora_b = ctx.saved_tensors
        scale = ctx.scale
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ _merged_weight(ctx.base, lora_a, lora_b, scale)
        g = grad.reshape(-1, grad.shape[-1])
        x2 = x.reshape(-1, x.shape[-1])
        if ctx.needs_input_grad[2]:
            grad_b = (g.t() @ (x2 @ lora_a.t())).mul_(scale)
        if ctx.needs_input_grad[1]:
            grad_a = ((g @ lora_b).t() @ x2).mul_(scale)
        return grad_x, grad_a, grad_b, None, None


# bf16 products are oneDNN primitives, created (~1 ms) and cached per shape. With a new token
# count every step, the cache grew by 0.7 GB over the benchmark's 74 steps; rows rounded up to
# a multiple of this keep it to a few shapes, at ~3% more product work.
ROW_MULTIPLE = 32


def _padded(rows: int) -> int:
    return -(-rows // ROW_MULTIPLE) * ROW_MULTIPLE


def plain_adapter(layer) -> str | None:
    """The name of a peft LoRA layer's one active adapter if it is plain LoRA (no dropout,
    DoRA or LoRA bias; not merged or disabled), else None: what the fused paths compute."""
    active = layer.active_adapters
    name = active[0] if len(active) == 1 else None
    if (
        name is None
        or layer.disable_adapters
        or layer.merged
        or name not in layer.lora_A
        or name in layer.lora_variant
        or layer.lora_bias.get(name)
        or not isinstance(layer.lora_dropout[name], torch.nn.Identity)
    ):
        return None
    return name


def _fused_lora_forward(self, x, *args, **kwargs):
    """peft LoRA layer forward: the fused path for the one plain adapter case, else peft's."""
    name = plain_adapter(self)
    if name is None or args or kwargs or x.dtype != self.lora_A[name].weight.dtype:
        return type(self).forward(self, x, *args, **kwargs)
    return _LoRALinear.apply(
        x,
        self.lora_A[name].weight,
        self.lora_B[name].weight,
        self.get_base_layer(),
        self.scaling[name],
    )


def fuse_lora(model) -> int:
    """peft LoRA layers over linear bases (4-bit on CPU, or dense) -> _LoRALinear.

    Adapters with dropout, DoRA, a LoRA bias or several active at once keep peft's forward.
    """
    import bitsandbytes as bnb
    from peft.tuners.lora import LoraLayer

    count = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        base = module.get_base_layer()
        if isinstance(base, bnb.nn.Linear4bit) and base.weight.device.type != "cpu":
            continue  # the GPU 4-bit kernels are bitsandbytes' business
        if isinstance(base, bnb.nn.Linear4bit) or type(base) is torch.nn.Linear:
            module.forward = types.MethodType(_fused_lora_forward, module)
            count += 1
    return count


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        rstd = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, rstd, weight)
        return weight * (x.float() * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, rstd, weight = ctx.saved_tensors
        normed = x.float() * rstd
        g = (grad * weight).float()
        grad_x = rstd * (g - normed * (g * normed).mean(-1, keepdim=True))
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (grad * normed.to(grad.dtype)).reshape(-1, weight.shape[-1]).sum(0)
        return grad_x.to(x.dtype), grad_w, None


def _rmsnorm_forward(self, x):
    return _RMSNorm.apply(x, self.weight, self.variance_epsilon)


def fuse_norms(model) -> int:
    """RMSNorms of the `weight * x / rms(x)` kind (Llama, Mistral, Qwen, Phi-3) -> _RMSNorm."""
    count = 0
    for module in model.modules():
        name = type(module).__name__
        # Gemma's norm scales by (1 + weight): a different function, left alone.
        if name.endswith("RMSNorm") and "Gemma" not in name and hasattr(module, "variance_epsilon"):
            module.forward = types.MethodType(_rmsnorm_forward, module)
            count += 1
    return count


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        sig = torch.sigmoid(gate)
        silu = gate * sig
        return grad * up * sig * (1 + gate * (1 - sig)), grad * silu


def _swiglu_mlp_forward(self, x):
    return self.down_proj(_SwiGLU.apply(self.gate_proj(x), self.up_proj(x)))


def swiglu_mlps(model):
    """The model's MLPs computing down(silu(gate(x)) * up(x))."""
    for module in model.modules():
        act = getattr(module, "act_fn", None)
        if (
            all(hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj"))
            and act is not None
            and type(act).__name__ in ("SiLU", "SiLUActivation")
        ):
            yield module


def fuse_swiglu(model) -> int:
    """swiglu_mlps -> the same with _SwiGLU in the middle (those grouped.fuse took aside)."""
    count = 0
    for module in swiglu_mlps(model):
        if not hasattr(module, "kaito_mlp"):
            module.forward = types.MethodType(_swiglu_mlp_forward, module)
            count += 1
    return count


class _SelectedTokenLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, operands):
        n = hidden.shape[0]
        total = hidden.new_zeros(())
        grad = torch.empty_like(hidden)
        weight = weight.to(operands)
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            pad = _padded(m) if operands == torch.bfloat16 else 0  # a few shapes: ROW_MULTIPLE
            h = _zero_padded(hidden[s : s + chunk], pad, dtype=operands)
            logits = (h @ weight.t())[:m].float()
            lse = torch.logsumexp(logits, dim=-1)
            t = targets[s : s + chunk]
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            # d(sum of losses)/d logits = softmax - onehot; then back through the output layer.
            logits.sub_(lse[:, None]).exp_()
            logits[torch.arange(len(t)), t] -= 1
            grad[s : s + chunk] = (_zero_padded(logits, pad, dtype=operands) @ weight)[:m]
        ctx.grad = grad
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad = ctx.grad * grad_total
        ctx.grad = None
        return grad, None, None, None, None


def selected_token_loss(
    hidden, weight, targets, *, chunk_elements: int = 1 << 23, bf16_products: bool = False
):
    """Sum of cross-entropy over rows of `hidden` (n, d) against `targets` (n,).

    `weight` (vocab, d) is the frozen output layer. Chunks hold at most `chunk_elements` logits
    (32 MB of float32 ones; for SmolLM2's 49k vocabulary 160 rows, where bf16 products run at
    0.83 and 0.64 TFLOP/s forward and backward on an AMD EPYC, against 0.71 and 0.51 at 85 rows).
    With `bf16_products` the two products take bf16 operands (float32 accumulation); the
    log-softmax stays float32.
    """
    chunk = max(1, chunk_elements // weight.shape[0])
    if bf16_products and chunk > ROW_MULTIPLE:
        chunk -= chunk % ROW_MULTIPLE  # whole chunks need no padding
    operands = torch.bfloat16 if bf16_products else hidden.dtype
    if not (torch.is_grad_enabled() and hidden.requires_grad):  # evaluation: the loss only
        with torch.no_grad():
            w = weight.to(operands)
            return sum(
                F.cross_entropy(
                    (
                        _zero_padded(
                            hidden[s : s + chunk],
                            _padded(len(t)) if bf16_products else 0,
                            dtype=operands,
                        )
                        @ w.t()
                    )[: len(t)].float(),
                    t,
                    reduction="sum",
                )
                for s in range(0, hidden.shape[0], chunk)
                for t in [targets[s : s + chunk]]
            )
    if weight.requires_grad:  # a trainable output layer needs its own gradient: plain path
        logits = hidden @ weight.t()
        return F.cross_entropy(logits.float(), targets, reduction="sum")
    return _SelectedTokenLoss.apply(hidden, weight, targets, chunk, operands)
