"""From command-line options to a running engine: weights, tokenizer, model, adapters.

Loading reports progress on stderr: where the weights come from, the placement, the
transformers load itself (its progress bar), the adapters, and a warm-up pass.

Loading runs on a thread of its own that ends before the engine's first step (on_own_thread):
every thread that runs OpenMP work keeps its own team of worker threads, and once a process
holds more OpenMP threads than CPUs, libgomp stops its workers spinning between parallel regions
(about 100 spins, then a futex sleep and a wake-up per region). A model loaded on the server's
main thread and run on the engine's was two teams: at 2 threads on 2 cores the engine ran slower
than at 1 (issue 17: one stream 17.8 tok/s against 30.5 with the loader's team gone).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from kaito_jupyter import catalog
from kaito_jupyter.errors import RuntimeFailure

from .served import AdapterInfo, Defaults, Served

log = logging.getLogger("kaito.inference")


@dataclass
class AdapterSpec:
    name: str
    source: str  # a directory or an OCI image reference
    strength: float = 1.0


@dataclass
class Options:
    preset: str | None = None
    model: str | None = None
    adapters: list[AdapterSpec] = field(default_factory=list)
    served_name: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    max_batch: int | None = None  # default: 64 on CPU, 256 on GPU
    max_queue: int = 256
    kv_cache_gib: float | None = None  # default: 2 on CPU, most of the free GPU memory
    chunk: int = 256
    step_tokens: int = 256
    max_model_len: int | None = None
    trust_remote_code: bool = False
    threads: int | None = None
    cpu_products: str = "auto"  # auto, bfloat16 or float32: see device.choose_products
    fast: bool = True  # the batched decoder where the architecture allows it


def load(options: Options, *, start: bool = True) -> tuple[Served, object]:
    """The served model's description and its engine (started unless `start` is false).

    The loading itself runs on a thread that ends before this returns (see the module
    docstring); exceptions it raises are raised here.
    """
    return on_own_thread(_load, options, start)


def on_own_thread(fn, *args):
    """fn(*args) on a new thread, joined: its OpenMP team ends with it."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller, raised there
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="inference-load", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _load(options: Options, start: bool) -> tuple[Served, object]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from . import device as placement_rules
    from .engine import Engine

    if options.threads:
        torch.set_num_threads(options.threads)
    preset = catalog.find_preset(options.preset) if options.preset else None
    if options.preset and preset is None:
        catalog.preset(options.preset)  # raises with close matches
    source = options.preset or options.model
    log.info("resolving weights for %s", source)
    from kaito_jupyter.runtimes import weights

    path = weights.resolve(source, progress=log.info)
    log.info("weights: %s", path)
    placement = placement_rules.choose(
        options.device, options.dtype, preset and preset.dtype, options.cpu_products
    )
    log.info(
        "placement: %s, %s%s",
        placement.device,
        placement.dtype,
        f", device_map={placement.device_map}" if placement.device_map else "",
    )
    started = time.monotonic()
    trust = options.trust_remote_code or bool(preset and preset.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=getattr(torch, placement.dtype),
            device_map=placement.device_map,
            trust_remote_code=trust,
        )
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(
            f"could not load the model from {path}: {exc}", reason="ModelLoadFailed"
        ) from exc
    model.eval()
    log.info("model loaded in %.1f s", time.monotonic() - started)

    config = model.config
    context = (preset.context_length if preset else None) or getattr(
        config, "max_position_embeddings", 2048
    )
    if options.max_model_len:
        context = min(context, options.max_model_len)
    cpu = placement.device == "cpu"
    max_batch = options.max_batch or (64 if cpu else 256)

    runner, adapter_set = _runner(model, options, max_batch, getattr(torch, placement.products))
    adapters = _adapters(options.adapters, adapter_set, log.info)
    gib = options.kv_cache_gib or (2.0 if cpu else _free_gpu_gib(torch) * 0.9)
    budget = int(gib * (1 << 30) / runner.bytes_per_position)
    log.info("KV cache: %.2f GiB (%d positions), up to %d sequences", gib, budget, max_batch)

    try:
        generation = GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json: the model config's values
        generation = GenerationConfig.from_model_config(config)
    eos = _ids(generation.eos_token_id) | _ids(tokenizer.eos_token_id)
    preset_gen = preset.generation if preset else {}
    defaults = Defaults(
        temperature=float(preset_gen.get("temperature", 1.0)),
        top_p=float(preset_gen.get("top_p", 1.0)),
        max_new_tokens=int(preset_gen["max_new_tokens"])
        if "max_new_tokens" in preset_gen
        else None,
    )
    served = Served(
        name=options.served_name or (preset.name if preset else _dir_name(source)),
        tokenizer=tokenizer,
        context_length=context,
        eos=frozenset(eos),
        vocab_size=config.vocab_size,
        defaults=defaults,
        adapters=adapters,
    )
    engine = Engine(
        runner,
        context_length=context,
        max_slots=max_batch,
        max_waiting=options.max_queue,
        kv_budget=budget,
        chunk=options.chunk,
        step_tokens=options.step_tokens,
    )
    _warm_up(runner)
    if start:
        engine.start()
    log.info("ready: serving %s", ", ".join(c["id"] for c in served.model_cards()))
    return served, engine


def _runner(model, options: Options, max_batch: int, products):
    from .decoder import LlamaDecoder, unsupported_reason
    from .hf_runner import HFRunner
    from .lora import AdapterSet
    from .runner import DecoderRunner

    reason = unsupported_reason(model.config)
    if options.fast and reason is None:
        log.info(
            "engine: batched decoder (%s), %s products",
            model.config.model_type,
            str(products).removeprefix("torch."),
        )
        decoder = LlamaDecoder(model, products)
        adapters = AdapterSet.for_decoder(decoder)
        return DecoderRunner(decoder, max_slots=max_batch, adapters=adapters), adapters
    # transformers' own modules multiply in the model's dtype.
    log.info("engine: one sequence per forward pass (%s)", reason or "--no-fast")
    adapters = AdapterSet.for_module(model)
    return HFRunner(model, adapters=adapters), adapters


def _adapters(specs: list[AdapterSpec], adapter_set, progress) -> list[AdapterInfo]:
    from .lora import fetch

    infos = []
    for spec in specs:
        path = fetch(spec.source, progress=progress)
        index = adapter_set.add(spec.name, path, spec.strength)
        progress(f"adapter {spec.name}: {spec.source} at strength {spec.strength:g}")
        # Strength 0 is the base model exactly: route it there instead of adding zeros.
        infos.append(
            AdapterInfo(spec.name, spec.source, spec.strength, index if spec.strength else 0)
        )
    return infos


def _warm_up(runner) -> None:
    """One small forward pass, so the first request does not pay for kernel setup."""
    from .batch import Row, Step

    runner.forward(Step([Row(0, [0, 0], 0, True)], slots=1), 16)
    runner.idle()


def _free_gpu_gib(torch) -> float:
    free = 0
    for i in range(torch.cuda.device_count()):
        free += torch.cuda.mem_get_info(i)[0]
    return max(free / (1 << 30), 0.5)


def _ids(value) -> set[int]:
    if value is None:
        return set()
    return {int(v) for v in (value if isinstance(value, list | tuple) else [value])}


def _dir_name(source: str) -> str:
    from pathlib import Path

    return Path(source).expanduser().resolve().name or str(source)
