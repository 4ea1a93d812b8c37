"""Adapted projections on CPUs with native bf16 products: frozen weights held once in bf16, and
projections that read the same input computed as one product.

Attention's q/k/v and an MLP's gate/up read the same hidden states; every other adapted linear
is a set of one. Each set gets one persistent bf16 operand, made once from the frozen weights
(4-bit ones dequantized a single time, not twice per step), with room for the adapters:

             in       R
        [ W_1      B_1      ]  out_1
        [ W_2          B_2  ]  out_2
        [ sA_1     sA_2  0  ]  R = r_1 + r_2

The forward is one product, [x | x (sA)^T] [W | B]^T, and the backward's input gradient another,
[g | g B] [W ; sA]. The adapter's effect rides on its own columns instead of being merged into a
bf16 W, where the small early updates of B A would round away. The adapters' rows and columns
are rewritten from their float32 parameters at each forward (a few KB). The first member of a set
that is called computes the set, and leaves the others their outputs.

Why: at SmolLM2's shapes, the per-step dequantizations, the float32 -> bf16 copies of the
weights, and three separate products (each with its own bf16 copy of x, kept for the backward)
cost more than the products themselves.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from .kernels import _dense_weight, _padded, _swiglu_mlp_forward, plain_adapter, swiglu_mlps

SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class Group:
    """Projections with one input: their frozen weights and their adapters' places in one bf16
    operand (see the module docstring). `layers` are peft LoRA layers."""

    def __init__(self, layers):
        self.layers = list(layers)
        bases = [layer.get_base_layer() for layer in self.layers]
        self.width = bases[0].in_features
        self.outs = [b.out_features for b in bases]
        self.ranks = [self._adapter(layer)[0].shape[0] for layer in self.layers]
        self.out, self.rank = sum(self.outs), sum(self.ranks)
        self.operand = torch.zeros(self.out + self.rank, self.width + self.rank,
                                   dtype=torch.bfloat16)  # fmt: skip
        row = 0
        for base, out in zip(bases, self.outs, strict=True):
            self.operand[row : row + out, : self.width] = _dense_weight(base)[0].detach()
            row += out
        biases = [b.bias for b in bases]
        self.bias = (
            None
            if all(b is None for b in biases)
            else torch.cat([
                b.detach().float() if b is not None else torch.zeros(o)
                for b, o in zip(biases, self.outs, strict=True)
            ])
        )  # fmt: skip
        self.pending: tuple | None = None  # (input, {layer index: output}) not yet taken

    @staticmethod
    def _adapter(layer):
        name = layer.active_adapters[0]
        return layer.lora_A[name].weight, layer.lora_B[name].weight, layer.scaling[name]

    def adapters(self) -> list[torch.Tensor]:
        """A_1, B_1, A_2, B_2, ...: the trainable parameters, in the operand's order."""
        return [t for layer in self.layers for t in self._adapter(layer)[:2]]

    def write_adapters(self) -> None:
        with torch.no_grad():
            row, col = self.out, self.width
            out_row = 0
            for layer, out, rank in zip(self.layers, self.outs, self.ranks, strict=True):
                a, b, scale = self._adapter(layer)
                torch.mul(a, scale, out=self.operand[row : row + rank, : self.width])
                self.operand[out_row : out_row + out, col : col + rank] = b
                row, col, out_row = row + rank, col + rank, out_row + out

    def scales(self) -> list[float]:
        return [self._adapter(layer)[2] for layer in self.layers]

    def ready(self, x) -> bool:
        """Whether every member runs its one plain adapter on `x` (else peft's own forward)."""
        return x.dtype == torch.float32 and all(_plain(layer) for layer in self.layers)

    def output(self, index: int, x):
        """Member `index`'s output for x: computed with the whole set, or left by it."""
        if self.pending is not None and self.pending[0] is x and index in self.pending[1]:
            out = self.pending[1].pop(index)
            if not self.pending[1]:
                self.pending = None
            return out
        outs = _GroupedLoRA.apply(x, self, *self.adapters())
        others = {i: o for i, o in enumerate(outs) if i != index}
        self.pending = (x, others) if others else None
        return outs[index]


def _plain(layer) -> bool:
    name = plain_adapter(layer)
    return name is not None and layer.lora_A[name].weight.dtype == torch.float32


def _project(group, augmented):
    """y = [x | x (sA)^T] [W | B]^T, bf16 (rows, out), for the rows of x already in
    augmented[:, :width]; writes the x (sA)^T columns first."""
    width, out = group.width, group.out
    group.write_adapters()
    augmented[:, width:] = augmented[:, :width] @ group.operand[out:, :width].t()
    return augmented @ group.operand[:out].t()


def _project_back(group, augmented, g, input_grad: bool):
    """The backward of _project for output gradients in g[:, :out] (bf16, zero padding rows):
    the input gradient (bf16 (rows, width), or None) and A_1, B_1, A_2, ... 's gradients. The
    operand still holds the adapters its forward wrote: no optimizer step comes in between."""
    width, out = group.width, group.out
    g[:, out:] = g[:, :out] @ group.operand[:out, width:]  # g B, per member
    grad_x = (g @ group.operand)[:, :width] if input_grad else None
    # dB_i = g_i^T (s_i x A_i^T), dA_i = s_i (g_i B_i)^T x: the blocks of two products of the
    # bf16 operands (their padding rows are zeros on both sides).
    grad_b = (g[:, :out].t() @ augmented[:, width:]).float()
    grad_a = (g[:, out:].t() @ augmented[:, :width]).float()
    result, row, r0 = [], 0, 0
    for size, r, scale in zip(group.outs, group.ranks, group.scales(), strict=True):
        result += [grad_a[r0 : r0 + r].mul_(scale), grad_b[row : row + size, r0 : r0 + r]]
        row, r0 = row + size, r0 + r
    return grad_x, result


def _augmented_input(group, x2):
    """A bf16 (padded rows, width + rank) buffer holding x2's rows, zero rows after them."""
    n = x2.shape[0]
    augmented = torch.empty(_padded(n), group.width + group.rank, dtype=torch.bfloat16)
    augmented[:n, : group.width] = x2
    augmented[n:] = 0
    return augmented


def _output_grad(group, grads, rows: int):
    """A bf16 (rows, out + rank) buffer holding the members' output gradients side by side."""
    n = grads[0].shape[:-1].numel()
    g = torch.empty(rows, group.out + group.rank, dtype=torch.bfloat16)
    g[n:] = 0
    col = 0
    for grad, size in zip(grads, group.outs, strict=True):
        g[:n, col : col + size] = grad.reshape(n, size)
        col += size
    return g


class _GroupedLoRA(torch.autograd.Function):
    """Each member's x W_i^T + s_i (x A_i^T) B_i^T + b_i, bf16 operands, float32 accumulation."""

    @staticmethod
    def forward(ctx, x, group, *adapters):
        x2 = x.reshape(-1, group.width)
        n = x2.shape[0]
        augmented = _augmented_input(group, x2)
        y = _project(group, augmented)
        ctx.group = group
        ctx.save_for_backward(augmented)
        outs, col = [], 0
        for size in group.outs:
            o = y[:n, col : col + size].float()
            if group.bias is not None:
                o += group.bias[col : col + size]
            outs.append(o.reshape(*x.shape[:-1], size))
            col += size
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        (augmented,) = ctx.saved_tensors
        group = ctx.group
        shape = grads[0].shape[:-1]
        g = _output_grad(group, grads, augmented.shape[0])
        grad_x, result = _project_back(group, augmented, g, ctx.needs_input_grad[0])
        if grad_x is not None:
            grad_x = grad_x[: shape.numel()].float().reshape(*shape, group.width)
        return grad_x, None, *result


class _GroupedSwiGLU(torch.autograd.Function):
    """down(silu(gate(x)) * up(x)) for a gate/up Group and a down Group, all in bf16 between
    the two products: gate and up stay views of their product, the gated product is written
    straight into down's operand buffer, and the backward writes d gate and d up straight into
    gate/up's gradient buffer. Float32 in and out, as the layers around it."""

    @staticmethod
    def forward(ctx, x, gate_up, down, *adapters):
        x2 = x.reshape(-1, gate_up.width)
        n, inner = x2.shape[0], down.width
        augmented = _augmented_input(gate_up, x2)
        y = _project(gate_up, augmented)
        gate, up = y[:, :inner], y[:, inner:]
        hidden = torch.empty(augmented.shape[0], inner + down.rank, dtype=torch.bfloat16)
        torch.mul(F.silu(gate), up, out=hidden[:, :inner])  # zero rows stay zero: silu(0) = 0
        out = _project(down, hidden)[:n].float()
        ctx.groups = gate_up, down
        ctx.save_for_backward(augmented, y, hidden)
        return out.reshape(*x.shape[:-1], down.out)

    @staticmethod
    def backward(ctx, grad):
        augmented, y, hidden = ctx.saved_tensors
        gate_up, down = ctx.groups
        inner = down.width
        gate, up = y[:, :inner], y[:, inner:]
        g_down = _output_grad(down, [grad], hidden.shape[0])
        d_hidden, down_grads = _project_back(down, hidden, g_down, True)
        d_hidden = d_hidden[:, :inner]
        g = torch.empty(augmented.shape[0], gate_up.out + gate_up.rank, dtype=torch.bfloat16)
        sig = torch.sigmoid(gate)
        silu = gate * sig
        torch.mul(d_hidden, silu, out=g[:, inner : 2 * inner])  # d up
        # d gate = dh up sig (1 + gate (1 - sig)) = dh up sig (1 + gate - silu)
        silu.neg_().add_(gate).add_(1).mul_(sig).mul_(up)
        torch.mul(silu, d_hidden, out=g[:, :inner])
        grad_x, gate_up_grads = _project_back(gate_up, augmented, g, ctx.needs_input_grad[0])
        if grad_x is not None:
            shape = grad.shape[:-1]
            grad_x = grad_x[: shape.numel()].float().reshape(*shape, gate_up.width)
        return grad_x, None, None, *gate_up_grads, *down_grads


def _grouped_forward(self, x, *args, **kwargs):
    group, index = self.kaito_group
    if args or kwargs or not group.ready(x):
        return type(self).forward(self, x, *args, **kwargs)
    return group.output(index, x)


def _grouped_mlp_forward(self, x):
    gate_up, down = self.kaito_mlp
    if not (gate_up.ready(x) and down.ready(x)):
        return _swiglu_mlp_forward(self, x)
    return _GroupedSwiGLU.apply(x, gate_up, down, *gate_up.adapters(), *down.adapters())


def _route_mlps(model) -> int:
    """SiLU-gated MLPs whose gate/up are one Group and down another, bias-free ->
    _GroupedSwiGLU (their layers keep their own routes for calls from elsewhere)."""
    count = 0
    for mlp in swiglu_mlps(model):
        layers = [getattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")]
        if not all(hasattr(layer, "kaito_group") for layer in layers):
            continue
        gate_up, down = layers[0].kaito_group[0], layers[2].kaito_group[0]
        if (
            gate_up.layers == layers[:2]
            and down.layers == layers[2:]
            and (gate_up.bias is None and down.bias is None)
        ):
            mlp.kaito_mlp = (gate_up, down)
            mlp.forward = types.MethodType(_grouped_mlp_forward, mlp)
            count += 1
    return count


def _eligible(layer) -> bool:
    import bitsandbytes as bnb

    base = layer.get_base_layer()
    if isinstance(base, bnb.nn.Linear4bit):
        return base.weight.device.type == "cpu"
    return type(base) is torch.nn.Linear and not base.weight.requires_grad


def operand_bytes(layers) -> int:
    """The bf16 operands' size for these LoRA layers, adapters' rows and columns aside."""
    return sum(
        2 * layer.get_base_layer().in_features * layer.get_base_layer().out_features
        for layer in layers
    )


def fuse(model, budget: int | None = None) -> list[Group] | None:
    """Route the model's peft LoRA layers over frozen linear bases through Groups: siblings that
    read one input (SIBLINGS) together, the others alone. Layers that are not plain single
    adapters at call time (dropout, DoRA, a LoRA bias, several adapters) keep peft's forward.

    The operands cost 2 bytes per frozen weight on top of the model (4x a 4-bit model's own
    weights): if that exceeds `budget` bytes nothing is routed and None is returned, so a QLoRA
    job that chose 4 bits to fit keeps fitting."""
    from peft.tuners.lora import LoraLayer

    layers = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, LoraLayer) and _plain(m) and _eligible(m)
    }
    if budget is not None and operand_bytes(layers.values()) > budget:
        return None
    groups, grouped = [], set()
    for name in layers:
        parent, _, leaf = name.rpartition(".")
        for names in SIBLINGS:
            if leaf == names[0]:
                members = [f"{parent}.{n}" if parent else n for n in names]
                members = [m for m in members if m in layers]
                widths = {layers[m].get_base_layer().in_features for m in members}
                if len(members) > 1 and len(widths) == 1:
                    groups.append(Group([layers[m] for m in members]))
                    grouped.update(members)
    groups += [Group([layers[name]]) for name in layers if name not in grouped]
    for group in groups:
        for index, layer in enumerate(group.layers):
            layer.kaito_group = (group, index)
            layer.forward = types.MethodType(_grouped_forward, layer)
    _route_mlps(model)
    return groups
