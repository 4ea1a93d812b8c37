"""`python -m kaito_jupyter.runtimes.tuning`: fine-tune a preset with LoRA or QLoRA.

    python -m kaito_jupyter.runtimes.tuning --preset smollm2 --method qlora \\
        --input data.parquet --output ./adapter [--config training_config.yaml] [--max-steps N]

Order of work: configuration, data (fetched, read, tokenized) and only then the model, so that
bad input fails in seconds. Every failure ends with one clear line on stderr, a `failed` progress
event and the termination message (progress.py); the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from kaito_jupyter import catalog
from kaito_jupyter.errors import KaitoError, RuntimeFailure

from . import config as config_mod
from . import output, progress, records, sources


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kaito_jupyter.runtimes.tuning",
        description="Fine-tune a preset with LoRA or QLoRA; write (and push) the adapter.",
    )
    p.add_argument("--preset", help="the preset to tune (e.g. smollm2-135m-instruct)")
    p.add_argument("--model", help="a local checkpoint directory instead of the preset's weights")
    p.add_argument("--method", choices=("qlora", "lora"), default="qlora")
    p.add_argument("--input", dest="inputs", nargs="+", action="extend", required=True,
                   metavar="URL_OR_PATH", help="http(s) URLs, image references, files or directories")  # fmt: skip
    p.add_argument("--output", required=True, help="a directory, or an image reference to push to")
    p.add_argument("--config", help="a Kaito training_config.yaml (or its ConfigMap)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument(
        "--push-secret", help="docker config.json / dockerconfigjson secret for --output"
    )
    p.add_argument(
        "--pull-secret", help="docker config.json / dockerconfigjson secret for image inputs"
    )
    p.add_argument("--work-dir", help="checkpoints, progress and downloads (default: see docs)")
    p.add_argument(
        "--progress-file", help="JSON-lines progress (default: <work dir>/progress.jsonl)"
    )
    p.add_argument("--max-dataset-bytes", type=int, help="the disk budget for input data")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: OMP_NUM_THREADS)")
    p.add_argument(
        "--cpu-products", choices=("auto", "bfloat16", "float32"),
        default=os.environ.get("KAITO_TUNING_CPU_PRODUCTS", "auto"),
        help="operands of the matrix products on CPU (auto: bfloat16 where the CPU multiplies it "
        "natively, with float32 accumulation)",
    )  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    image = output.is_image(args.output)
    work_dir = Path(args.work_dir) if args.work_dir else output.default_work_dir(args.output)
    progress_path = Path(
        args.progress_file
        or os.environ.get("KAITO_TUNING_PROGRESS_FILE")
        or work_dir / "progress.jsonl"
    )
    events = progress.Progress(progress_path)
    try:
        result = run(args, work_dir=work_dir, image=image, events=events)
    except KaitoError as failure:
        return fail(events, getattr(failure, "reason", "TuningFailed"), failure)
    except KeyboardInterrupt:
        return fail(events, "TuningInterrupted", RuntimeFailure("interrupted"))
    except Exception as exc:  # a bug or an unforeseen library error: still a clear reason
        traceback.print_exc(file=sys.stderr)
        return fail(events, "TuningFailed", RuntimeFailure(f"{type(exc).__name__}: {exc}"))
    events.emit("completed", **result)
    return 0


def fail(events: progress.Progress, reason: str, failure: KaitoError) -> int:
    message = failure.message + (f" ({failure.hint})" if failure.hint else "")
    events.emit("failed", reason=reason, message=message)
    progress.write_termination_message(reason, message)
    print(f"tuning failed: {reason}: {message}", file=sys.stderr, flush=True)
    return 1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args, *, work_dir: Path, image: bool, events: progress.Progress) -> dict:
    cfg = config_mod.load(args.config, args.method)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise RuntimeFailure("--max-steps must be at least 1", reason="InvalidTuningConfig")
        cfg.training.max_steps = args.max_steps
    for note in cfg.notes:
        log(f"note: {note}")

    preset = catalog.preset(args.preset) if args.preset else None
    if preset is None and not args.model:
        raise RuntimeFailure("give --preset or --model", reason="InvalidTuningConfig")
    if preset is not None and not preset.tuning.supported:
        raise RuntimeFailure(
            f"preset {preset.name} does not support tuning", reason="TuningNotSupported"
        )
    target_modules = list(preset.tuning.target_modules) if preset else None

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    events.emit("started", method=cfg.method, preset=preset.name if preset else None,
                output=args.output, work_dir=str(work_dir))  # fmt: skip

    from kaito_jupyter.runtimes import weights

    checkpoint = weights.resolve(args.model or preset.name, progress=log)

    # Data first: a bad dataset fails before the model is loaded.
    budget = sources.DiskBudget(args.max_dataset_bytes or sources.default_budget(work_dir))
    files = sources.fetch(args.inputs, work_dir, budget=budget, pull_secret=args.pull_secret)
    conversations = records.load(files, cfg.dataset)
    tokenizer, train, evaluation, dropped = tokenize(checkpoint, cfg, conversations)
    log(f"data: {len(conversations)} conversations from {len(files)} file(s); "
        f"{len(train)} train, {len(evaluation)} eval, {dropped} without target tokens after truncation")  # fmt: skip

    from . import checkpoints, model, trainer

    fingerprint = checkpoints.fingerprint(
        cfg.method, vars(cfg.lora), vars(cfg.quantization), target_modules, cfg.training.seed,
        cfg.training.max_length, cfg.training.per_device_train_batch_size,
        [len(e) for e in train], str(checkpoint.name),
    )  # fmt: skip
    base_model = preset.name if preset else str(checkpoint)
    adapter_dir = work_dir / "adapter" if image else work_dir
    done = work_dir / "completed.json"
    if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
        log(f"this job already completed ({done}); not training again")
        summary = json.loads(done.read_text())
    else:
        loaded = model.load(
            checkpoint, cfg, target_modules=target_modules, tokenizer=tokenizer,
            cpu_products=args.cpu_products, log=log,
        )  # fmt: skip
        job = trainer.Trainer(
            loaded, train, evaluation, cfg.training, work_dir=work_dir, progress=events,
            fingerprint=fingerprint, shuffle=cfg.dataset.shuffle,
        )  # fmt: skip
        steps = len(job.plan(0))
        log(f"plan: {steps} packed steps per epoch, {len(train) / steps:.2f} conversations and "
            f"{sum(len(e) for e in train) / steps:.0f} tokens per step")  # fmt: skip
        started = time.perf_counter()
        result = job.run()
        output.save_adapter(loaded.model, adapter_dir, base_model=base_model)
        summary = {
            "fingerprint": fingerprint,
            "steps": result.steps,
            "trained_tokens": result.trained_tokens,
            "train_seconds": round(result.train_seconds, 3),
            "tokens_per_second": round(result.trained_tokens / max(result.train_seconds, 1e-9), 2),
            "loss": result.loss,
            "eval_loss": result.eval_loss,
            "resumed_from": result.resumed_from,
            "wall_seconds": round(time.perf_counter() - started, 3),
        }
        done.write_text(json.dumps(summary))
        shutil.rmtree(work_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(work_dir / "inputs", ignore_errors=True)
    summary = {k: v for k, v in summary.items() if k != "fingerprint"}
    summary["adapter"] = str(adapter_dir)
    if image:
        digest = output.push(adapter_dir, args.output, secret=args.push_secret, preset=base_model)
        log(f"pushed {args.output} ({digest})")
        summary.update(image=args.output, digest=digest)
    return summary


def tokenize(checkpoint: Path, cfg, conversations):
    from transformers import AutoTokenizer

    from . import chat, packing

    tokenizer = chat.prepare_tokenizer(
        AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=cfg.trust_remote_code),
        cfg.chat_template,
    )
    train_idx, eval_idx = packing.split(
        len(conversations), cfg.dataset.train_test_split,
        seed=cfg.dataset.shuffle_seed, shuffle=cfg.dataset.shuffle,
    )  # fmt: skip
    max_length = cfg.training.max_length
    train, dropped_train = chat.encode_all(
        tokenizer, [conversations[i] for i in train_idx], max_length
    )
    evaluation, dropped_eval = chat.encode_all(
        tokenizer, [conversations[i] for i in eval_idx], max_length
    )
    if not train:
        raise RuntimeFailure(
            f"no training example keeps an assistant token within max_length ({max_length} tokens)",
            reason="EmptyDataset",
            hint="raise TrainingArguments.max_length, or shorten the prompts",
        )
    return tokenizer, train, evaluation, dropped_train + dropped_eval
