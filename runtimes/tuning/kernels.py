"""The three pieces of the training step that decide its speed on CPU.

- `document_attention`: attention over a packed row, one causal SDPA call per document, so no
  token attends across documents and no (T x T) mask is built. SDPA over the whole flattened
  row with a block-diagonal mask was measured 7x slower per layer on this CPU.
- `Dequantize4bit`: a frozen 4-bit linear layer that dequantizes its weight once per step and
  reuses it for the input gradient, where bitsandbytes dequantizes again in the backward pass.
- `selected_token_loss`: cross-entropy on the target positions only, in chunks, with the input
  gradient computed in the same pass: the (tokens x vocabulary) logits are never all alive at
  once, and the positions that carry no loss (prompts) never reach the output layer.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

ATTENTION = "kaito_document_sdpa"
BOUNDS_KWARG = "kaito_document_bounds"


def document_attention(
    module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs
):
    """transformers attention interface: query (B, H, T, D), key/value (B, Hkv, T, D)."""
    bounds = kwargs.get(BOUNDS_KWARG)
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        # Expanding once per layer beats SDPA's GQA path, which falls back to the math kernel.
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    if bounds is None or len(bounds) <= 2:
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling)
    else:
        out = torch.cat(
            [
                F.scaled_dot_product_attention(
                    query[:, :, s:e],
                    key[:, :, s:e],
                    value[:, :, s:e],
                    is_causal=True,
                    scale=scaling,
                )
                for s, e in itertools.pairwise(bounds)
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


class Dequantize4bit(torch.autograd.Function):
    """y = x W^T for a frozen 4-bit W, dequantized once for both passes."""

    @staticmethod
    def forward(ctx, x, packed, quant_state, bias):
        import bitsandbytes.functional as bnbf

        weight = bnbf.dequantize_4bit(packed, quant_state).to(x.dtype)
        ctx.weight = weight  # a step-lived intermediate; freed when the graph is
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        weight = ctx.weight
        ctx.weight = None
        return grad @ weight, None, None, None


def _linear4bit_forward(self, x):
    return Dequantize4bit.apply(x, self.weight.data, self.weight.quant_state, self.bias)


def dequantize_once(model) -> int:
    """Route every bitsandbytes 4-bit linear layer of `model` through Dequantize4bit."""
    import types

    import bitsandbytes as bnb

    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.forward = types.MethodType(_linear4bit_forward, module)
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


def selected_token_loss(hidden, weight, targets, *, chunk_elements: int = 1 << 24):
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
