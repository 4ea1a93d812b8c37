"""`python -m kaito_jupyter.runtimes.inference`: parse the command line, load, serve.

python -m kaito_jupyter.runtimes.inference (--preset NAME | --model PATH)
    [--adapter NAME=PATH_OR_IMAGE[:STRENGTH]]... --host H --port P
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from kaito_jupyter.errors import KaitoError

from .loader import AdapterSpec, Options


def parse_adapter(spec: str) -> AdapterSpec:
    """NAME=PATH_OR_IMAGE[:STRENGTH]. A trailing `:number` in [0, 1] is the strength; an image
    whose tag looks like one needs an explicit strength after it (NAME=repo:1.0:1)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(
            f"--adapter {spec!r}: expected NAME=PATH_OR_IMAGE[:STRENGTH]"
        )
    source, strength = rest, 1.0
    head, colon, tail = rest.rpartition(":")
    if colon and head:
        try:
            value = float(tail)
        except ValueError:
            value = None
        if value is not None:
            if not 0.0 <= value <= 1.0:
                raise argparse.ArgumentTypeError(
                    f"--adapter {spec!r}: strength {tail} is outside [0, 1]"
                )
            source, strength = head, value
    return AdapterSpec(name=name, source=source, strength=strength)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kaito_jupyter.runtimes.inference",
        description="Serve a model with Kaito's /chat and the OpenAI API, batching concurrent requests.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="a preset name (kaito presets lists them)")
    source.add_argument(
        "--model", help="a checkpoint directory, or an OCI image of the weights (oci://REF)"
    )
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        type=parse_adapter,
        metavar="NAME=PATH_OR_IMAGE[:STRENGTH]",
        help="a LoRA adapter (directory or image) served as model NAME; strength in [0, 1]",
    )
    # Loopback unless told: the container image passes --host 0.0.0.0 itself (runtimes/Dockerfile).
    p.add_argument("--host", default="127.0.0.1", help="where to listen (127.0.0.1)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--served-model-name", help="the model name clients use (default: the preset)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument(
        "--cpu-products", choices=("auto", "bfloat16", "float32"), default="auto",
        help="operands of a float32 model's matrix products on CPU (auto: bfloat16, the weights "
        "held in it, where the CPU multiplies it natively; float32 accumulation either way)",
    )  # fmt: skip
    p.add_argument("--max-batch", type=int, help="sequences decoded together (64 CPU, 256 GPU)")
    p.add_argument("--max-queue", type=int, default=256, help="waiting requests before 429s")
    p.add_argument(
        "--kv-cache-gib", type=float, help="KV cache memory (2 on CPU; GPU: free memory)"
    )
    p.add_argument("--prefill-chunk", type=int, default=256, help="prompt tokens per chunk")
    p.add_argument("--step-tokens", type=int, default=256, help="prompt tokens per iteration")
    p.add_argument("--max-model-len", type=int, help="cap the context window")
    p.add_argument("--max-body-bytes", type=int, default=4 << 20)
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to finish on SIGTERM")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument(
        "--no-fast",
        action="store_true",
        help="use the transformers model one sequence at a time instead of the batched decoder",
    )
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    return p


def options_from(args: argparse.Namespace) -> Options:
    names = [a.name for a in args.adapter]
    if len(set(names)) != len(names):
        raise KaitoError(f"adapter names must be unique: {', '.join(names)}")
    return Options(
        preset=args.preset,
        model=args.model,
        adapters=args.adapter,
        served_name=args.served_model_name,
        device=args.device,
        dtype=args.dtype,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        kv_cache_gib=args.kv_cache_gib,
        chunk=args.prefill_chunk,
        step_tokens=args.step_tokens,
        max_model_len=args.max_model_len,
        trust_remote_code=args.trust_remote_code,
        threads=args.threads,
        cpu_products=args.cpu_products,
        fast=not args.no_fast,
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from .loader import load
    from .server import Server

    try:
        options = options_from(args)
        served, engine = load(options)
    except KaitoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = Server(served, engine, max_body=args.max_body_bytes, drain_timeout=args.drain_timeout)
    asyncio.run(server.run(args.port, args.host))
    return 0
