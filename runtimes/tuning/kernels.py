"""The pieces of the training step that decide its speed and memory on CPU.

- `document_attention`: attention over a packed row, one causal SDPA call per document, so no
  token attends across documents and no (T x T) mask is built. SDPA over the whole flattened
  row with a block-diagonal mask was measured 7x slower per layer on this CPU.
- `route_4bit_layers`: 4-bit layers keep a fixed float32 path on CPU (see there). Caching the
  dequantized weights was tried: it saves the two dequantizations per step (~0.1 s) but holds
  0.4 GB more, which the peer's peak memory does not leave room for; more tokens per step
  amortize the dequantization better.
- `fuse_lora`: a LoRA layer computes x (W + s B A)^T, one product, where peft adds the adapter's
  output to the base layer's.
- `fuse_norms`, `fuse_swiglu`: RMSNorm and SiLU-gated MLPs that keep only their inputs for the
  backward pass (transformers' versions keep 2-3 intermediates each): about a third less
  activation memory per token, which buys more tokens per step within the peer's peak memory.
- `selected_token_loss`: cross-entropy on the target positions only, in chunks, with the input
  gradient computed in the same pass: the (tokens x vocabulary) logits are never all alive at
  once, and the positions that carry no loss (prompts) never reach the output layer.
"""

from __future__ import annotations

import itertools
import types

import torch
import torch.nn.functional as F

ATTENTION = "kaito_document_sdpa"
BOUNDS_KWARG = "kaito_document_bounds"


def document_attention(
    module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs
):
    """transformers attention interface: query (B, H, T, D), key/value (B, Hkv, T, D)."""
    bounds = kwargs.get(BOUNDS_KWARG)
    gqa = query.shape[1] != key.shape[1]  # SDPA's GQA path: as fast, and k/v stay unexpanded
    if bounds is None or len(bounds) <= 2:
        out = F.scaled_dot_product_attention(
            query, key, value, is_causal=True, scale=scaling, enable_gqa=gqa
        )
    else:
        # split, not slicing: the backward of a split is one concatenation, where each slice's
        # backward would allocate a zero tensor of the whole row.
        lengths = [e - s for s, e in itertools.pairwise(bounds)]
        parts = zip(
            query.split(lengths, dim=2),
            key.split(lengths, dim=2),
            value.split(lengths, dim=2),
            strict=True,
        )
        out = torch.cat(
            [
                F.scaled_dot_product_attention(
                    q, k, v, is_causal=True, scale=scaling, enable_gqa=gqa
                )
                for q, k, v in parts
            ],
            dim=2,
        )
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs):
    return None  # document_attention is causal per document by construction


def register_attention() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION, document_attention)
    AttentionMaskInterface.register(ATTENTION, _no_mask)
    return ATTENTION


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


def _fused_lora_forward(self, x, *args, **kwargs):
    """peft LoRA layer forward: the fused path for the one plain adapter case, else peft's."""
    active = self.active_adapters
    name = active[0] if len(active) == 1 else None
    if (
        name is None
        or args
        or kwargs
        or self.disable_adapters
        or self.merged
        or name not in self.lora_A
        or name in self.lora_variant
        or self.lora_bias.get(name)
        or not isinstance(self.lora_dropout[name], torch.nn.Identity)
        or x.dtype != self.lora_A[name].weight.dtype
    ):
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


def fuse_swiglu(model) -> int:
    """MLPs computing down(silu(gate(x)) * up(x)) -> the same with _SwiGLU in the middle."""
    count = 0
    for module in model.modules():
        act = getattr(module, "act_fn", None)
        if (
            all(hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj"))
            and act is not None
            and type(act).__name__ in ("SiLU", "SiLUActivation")
        ):
            module.forward = types.MethodType(_swiglu_mlp_forward, module)
            count += 1
    return count


class _SelectedTokenLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        n = hidden.shape[0]
        total = hidden.new_zeros(())
        grad = torch.empty_like(hidden)
        for s in range(0, n, chunk):
            h = hidden[s : s + chunk]
            logits = h @ weight.t()
            lse = torch.logsumexp(logits, dim=-1)
            t = targets[s : s + chunk]
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            # d(sum of losses)/d logits = softmax - onehot; then back through the output layer.
            logits.sub_(lse[:, None]).exp_()
            logits[torch.arange(len(t)), t] -= 1
            grad[s : s + chunk] = logits @ weight
        ctx.grad = grad
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad = ctx.grad * grad_total
        ctx.grad = None
        return grad, None, None, None


def selected_token_loss(hidden, weight, targets, *, chunk_elements: int = 1 << 22):
    """Sum of cross-entropy over rows of `hidden` (n, d) against `targets` (n,).

    `weight` (vocab, d) is the frozen output layer. Chunks hold at most `chunk_elements` logits.
    """
    chunk = max(1, chunk_elements // weight.shape[0])
    if not (torch.is_grad_enabled() and hidden.requires_grad):  # evaluation: the loss only
        with torch.no_grad():
            return sum(
                F.cross_entropy(
                    hidden[s : s + chunk] @ weight.t(), targets[s : s + chunk], reduction="sum"
                )
                for s in range(0, hidden.shape[0], chunk)
            )
    if weight.requires_grad:  # a trainable output layer needs its own gradient: plain path
        logits = hidden @ weight.t()
        return F.cross_entropy(logits.float(), targets, reduction="sum")
    return _SelectedTokenLoss.apply(hidden, weight, targets, chunk)
