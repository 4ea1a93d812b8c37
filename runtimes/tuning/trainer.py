"""The training loop: packed steps, loss on assistant tokens, AdamW on the LoRA weights,
evaluation, progress events and checkpoints.

A plain loop rather than transformers' Trainer: the step is the product here (see kernels.py for
what makes it fast), and resume, progress and evaluation are a few lines each.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from . import checkpoints, packing
from .chat import Example
from .config import Training
from .progress import Progress


@dataclass
class Result:
    steps: int
    trained_tokens: int
    train_seconds: float
    loss: float | None
    eval_loss: float | None
    resumed_from: int | None


def learning_rate(step: int, total: int, cfg: Training) -> float:
    """The rate for optimizer step `step` (0-based): warmup, then the scheduler's decay."""
    warmup = cfg.warmup_steps or math.ceil(total * cfg.warmup_ratio)
    if step < warmup:
        return cfg.learning_rate * (step + 1) / (warmup + 1)
    kind = cfg.lr_scheduler_type
    if kind in ("constant", "constant_with_warmup"):
        return cfg.learning_rate
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "cosine":
        return cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.learning_rate * max(0.0, 1 - progress)


class Trainer:
    def __init__(self, loaded, train: list[Example], evaluation: list[Example], cfg: Training,
                 *, work_dir: Path, progress: Progress, fingerprint: str, shuffle: bool):  # fmt: skip
        self.loaded = loaded
        self.train_examples = train
        self.eval_examples = evaluation
        self.cfg = cfg
        self.work_dir = work_dir
        self.progress = progress
        self.fingerprint = fingerprint
        self.shuffle = shuffle
        self.budget = cfg.max_length * cfg.per_device_train_batch_size
        self.lengths = [len(e) for e in train]
        self._plans: dict[int, list[list[int]]] = {}

    def plan(self, epoch: int) -> list[list[int]]:
        if epoch not in self._plans:
            self._plans = {epoch: packing.plan_epoch(
                self.lengths, self.budget, seed=self.cfg.seed, epoch=epoch, shuffle=self.shuffle
            )}  # fmt: skip
        return self._plans[epoch]

    def total_steps(self) -> int:
        if self.cfg.max_steps > 0:
            return self.cfg.max_steps
        micro = len(self.plan(0))
        return max(
            1, math.ceil(self.cfg.num_train_epochs * micro / self.cfg.gradient_accumulation_steps)
        )

    def _tensors(self, step: packing.Step):
        import torch

        device = self.loaded.device
        return (
            torch.tensor([step.input_ids], device=device),
            torch.tensor([step.position_ids], device=device),
            torch.tensor(step.target_positions, device=device),
            torch.tensor(step.target_ids, device=device),
        )

    def loss_sum(self, step: packing.Step):
        """Summed cross-entropy over the step's target tokens."""
        from .kernels import BOUNDS_KWARG, selected_token_loss

        ids, positions, where, targets = self._tensors(step)
        out = self.loaded.decoder(
            input_ids=ids, position_ids=positions, use_cache=False, **{BOUNDS_KWARG: step.bounds}
        )
        hidden = out.last_hidden_state[0].index_select(0, where)
        return selected_token_loss(
            hidden, self.loaded.output_weight, targets, bf16_products=self.loaded.bf16_products
        )

    def evaluate(self) -> float | None:
        import torch

        if not self.eval_examples:
            return None
        model = self.loaded.model
        model.eval()
        total, count = 0.0, 0
        lengths = [len(e) for e in self.eval_examples]
        with torch.no_grad():
            for members in packing.plan_epoch(lengths, self.budget, seed=0, epoch=0, shuffle=False):
                step = packing.collate(self.eval_examples, members)
                total += float(self.loss_sum(step))
                count += len(step.target_ids)
        model.train()
        return total / max(count, 1)

    def run(self) -> Result:
        import torch

        cfg = self.cfg
        model = self.loaded.model
        params = [p for p in model.parameters() if p.requires_grad]
        # fused: one kernel for all of the adapters' ~400 small tensors, where the default
        # loop on CPU runs a dozen operators per tensor (17 vs 5 ms a step for SmolLM2's 420 adapter tensors).
        optimizer = torch.optim.AdamW(
            params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay,
            fused=self.loaded.device in ("cpu", "cuda"),
        )  # fmt: skip
        total = self.total_steps()
        state = checkpoints.State(0, 0, 0, 0, 0.0, self.fingerprint)
        resumed_from = None
        found = checkpoints.latest(self.work_dir, self.fingerprint)
        if found:
            path, state = found
            checkpoints.restore(path, model, optimizer)
            resumed_from = state.step
            self.progress.emit("resumed", step=state.step, checkpoint=str(path))
        torch.manual_seed(cfg.seed + state.step)
        model.train()
        accumulation = cfg.gradient_accumulation_steps
        window_loss = window_targets = window_tokens = 0
        window_time = 0.0
        last_loss = eval_loss = None
        while state.step < total:
            started = time.perf_counter()
            micro_steps = []
            while len(micro_steps) < accumulation:
                plan = self.plan(state.epoch)
                if state.position >= len(plan):
                    state.epoch, state.position = state.epoch + 1, 0
                    continue
                micro_steps.append(packing.collate(self.train_examples, plan[state.position]))
                state.position += 1
            targets = sum(len(s.target_ids) for s in micro_steps)
            rate = learning_rate(state.step, total, cfg)
            for group in optimizer.param_groups:
                group["lr"] = rate
            step_loss = 0.0
            for micro in micro_steps:
                loss = self.loss_sum(micro)
                (loss / targets).backward()
                step_loss += float(loss.detach())
            if cfg.max_grad_norm and cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - started
            tokens = sum(s.tokens for s in micro_steps)
            state.step += 1
            state.trained_tokens += tokens
            state.train_seconds += elapsed
            window_loss += step_loss
            window_targets += targets
            window_tokens += tokens
            window_time += elapsed
            if state.step % cfg.logging_steps == 0 or state.step == total:
                last_loss = window_loss / max(window_targets, 1)
                per_step = state.train_seconds / max(state.step - (resumed_from or 0), 1)
                self.progress.emit(
                    "step",
                    step=state.step,
                    total_steps=total,
                    epoch=round(
                        state.epoch + state.position / max(len(self.plan(state.epoch)), 1), 4
                    ),
                    loss=round(last_loss, 6),
                    eval_loss=eval_loss,
                    learning_rate=rate,
                    trained_tokens=state.trained_tokens,
                    tokens_per_second=round(window_tokens / max(window_time, 1e-9), 2),
                    seconds_per_step=round(window_time / cfg.logging_steps, 4),
                    eta_seconds=round(per_step * (total - state.step), 1),
                )
                window_loss = window_targets = window_tokens = 0
                window_time = 0.0
            if cfg.eval_steps and state.step % cfg.eval_steps == 0 and state.step < total:
                eval_loss = self.evaluate()
                self.progress.emit("eval", step=state.step, eval_loss=eval_loss)
            if (
                cfg.save_strategy == "steps"
                and cfg.save_steps
                and state.step % cfg.save_steps == 0
                and state.step < total
            ):
                path = checkpoints.save(
                    self.work_dir, model, optimizer, state, cfg.save_total_limit
                )
                self.progress.emit("checkpoint", step=state.step, path=str(path))
            if (
                cfg.save_strategy == "epoch"
                and state.position >= len(self.plan(state.epoch))
                and state.step < total
            ):
                path = checkpoints.save(
                    self.work_dir, model, optimizer, state, cfg.save_total_limit
                )
                self.progress.emit("checkpoint", step=state.step, path=str(path))
        eval_loss = self.evaluate()
        if eval_loss is not None:
            self.progress.emit("eval", step=state.step, eval_loss=round(eval_loss, 6))
        return Result(
            state.step,
            state.trained_tokens,
            state.train_seconds,
            last_loss,
            eval_loss,
            resumed_from,
        )
