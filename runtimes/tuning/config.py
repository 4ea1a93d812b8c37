"""The tuning job's configuration: Kaito's `training_config.yaml`, checked, with defaults per method.

The file has six sections, as in Kaito's default `lora-params`/`qlora-params` ConfigMaps:
ModelConfig, QuantizationConfig, LoraConfig, TrainingArguments, DataCollator, DatasetConfig.
It may come wrapped in `training_config:` (Kaito's layout), bare, or as the ConfigMap manifest
itself. Every key is known here; a key that is not is refused with the section's accepted keys,
because a silently ignored typo (`learning_rte`) costs a whole training run.

Some of Kaito's keys only matter to its GPU launcher (`device_map`, `ddp_find_unused_parameters`,
`local_files_only`, `output_dir`, `report_to`): they are accepted and have no effect here.
Pure: no torch.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kaito_jupyter.errors import RuntimeFailure

SECTIONS = (
    "ModelConfig",
    "QuantizationConfig",
    "LoraConfig",
    "TrainingArguments",
    "DataCollator",
    "DatasetConfig",
)

# Keys accepted with no effect: Kaito's launcher settings, and HF settings this runtime decides
# itself (precision follows the hardware; the loader is ours).
_NO_EFFECT = {
    "ModelConfig": {
        "local_files_only", "device_map", "cache_dir", "force_download", "resume_download",
        "proxies", "low_cpu_mem_usage", "offload_folder", "offload_state_dict",
        "pretrained_model_name_or_path", "state_dict", "use_safetensors", "torch_dtype", "dtype",
        "attn_implementation", "token", "use_auth_token", "revision",
    },
    "QuantizationConfig": {"bnb_4bit_compute_dtype", "bnb_4bit_quant_storage", "llm_int8_threshold",
                           "llm_int8_has_fp16_weight", "llm_int8_enable_fp32_cpu_offload", "quant_method"},
    "LoraConfig": {"task_type", "inference_mode", "fan_in_fan_out", "loftq_config", "layers_pattern"},
    "TrainingArguments": {
        "output_dir", "overwrite_output_dir", "ddp_find_unused_parameters", "report_to", "run_name",
        "logging_dir", "logging_strategy", "bf16", "fp16", "tf32", "dataloader_num_workers",
        "dataloader_pin_memory", "remove_unused_columns", "push_to_hub", "disable_tqdm",
        "load_best_model_at_end", "metric_for_best_model", "greater_is_better", "do_train",
        "do_eval", "evaluation_strategy", "eval_strategy", "prediction_loss_only",
        "save_safetensors", "save_only_model", "dataset_text_field", "group_by_length",
        "train_sampling_strategy", "per_device_eval_batch_size", "eval_accumulation_steps",
        "torch_compile", "gradient_checkpointing_kwargs", "optim", "label_names",
        "ddp_backend", "local_rank", "log_level",
    },
    "DataCollator": {"mlm", "mlm_probability", "return_tensors", "pad_to_multiple_of", "tokenizer"},
    "DatasetConfig": {"dataset_path", "dataset_extension"},
}  # fmt: skip

# Keys that change what this runtime does.
_USED = {
    "ModelConfig": {"chat_template", "trust_remote_code"},
    "QuantizationConfig": {"load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type",
                           "bnb_4bit_use_double_quant", "llm_int8_skip_modules"},
    "LoraConfig": {"r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora",
                   "init_lora_weights", "layers_to_transform", "modules_to_save"},
    "TrainingArguments": {
        "num_train_epochs", "max_steps", "per_device_train_batch_size",
        "gradient_accumulation_steps", "learning_rate", "weight_decay", "adam_beta1",
        "adam_beta2", "adam_epsilon", "max_grad_norm", "lr_scheduler_type", "warmup_ratio",
        "warmup_steps", "logging_steps", "eval_steps", "save_steps", "save_strategy",
        "save_total_limit", "seed", "max_seq_length", "max_length", "packing",
        "gradient_checkpointing",
    },
    "DataCollator": set(),
    "DatasetConfig": {"shuffle_dataset", "shuffle_seed", "train_test_split", "messages_column",
                      "context_column", "response_column", "prompt_column", "max_dataset_rows"},
}  # fmt: skip

ACCEPTED = {name: _NO_EFFECT[name] | _USED[name] for name in SECTIONS}

SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")


def _invalid(message: str, hint: str | None = None) -> RuntimeFailure:
    return RuntimeFailure(message, reason="InvalidTuningConfig", hint=hint)


@dataclass
class Quantization:
    load_in_4bit: bool
    quant_type: str = "nf4"
    double_quant: bool = True
    skip_modules: list[str] | None = None


@dataclass
class Lora:
    r: int = 8
    alpha: float = 8
    dropout: float = 0.0
    target_modules: list[str] | str | None = None  # None: the preset's defaults
    bias: str = "none"
    use_rslora: bool = False
    init_lora_weights: bool | str = True
    layers_to_transform: list[int] | None = None
    modules_to_save: list[str] | None = None


@dataclass
class Training:
    num_train_epochs: float = 3.0
    max_steps: int = -1
    per_device_train_batch_size: int = 1  # packed rows per step
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    logging_steps: int = 1
    eval_steps: int = 0  # 0: evaluate at the end (and at each checkpoint)
    save_steps: int = 50
    save_strategy: str = "steps"
    save_total_limit: int = 2
    seed: int = 42
    max_length: int = 1024  # tokens per packed row (TRL's max_length)
    packing: bool = True
    gradient_checkpointing: bool = False


@dataclass
class Dataset:
    shuffle: bool = True
    shuffle_seed: int = 42
    train_test_split: float = 0.9  # the train fraction; 1 means no eval split
    messages_column: str | None = None
    prompt_column: str | None = None
    context_column: str | None = None
    response_column: str | None = None
    max_rows: int | None = None


@dataclass
class TuningConfig:
    method: str
    quantization: Quantization
    lora: Lora = field(default_factory=Lora)
    training: Training = field(default_factory=Training)
    dataset: Dataset = field(default_factory=Dataset)
    chat_template: str | None = None
    trust_remote_code: bool = False
    notes: list[str] = field(default_factory=list)  # what was accepted but has no effect


def _sections(doc: Any, source: str) -> dict[str, dict[str, Any]]:
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise _invalid(f"{source}: expected a mapping of sections, got {type(doc).__name__}")
    if doc.get("kind") == "ConfigMap":
        text = (doc.get("data") or {}).get("training_config.yaml")
        if text is None:
            raise _invalid(f"{source}: the ConfigMap has no data.training_config.yaml")
        return _sections(yaml.safe_load(text), source)
    if "training_config" in doc:
        extra = sorted(set(doc) - {"training_config"})
        if extra:
            raise _invalid(f"{source}: unknown top-level key {extra[0]!r} next to training_config")
        doc = doc["training_config"] or {}
        if not isinstance(doc, dict):
            raise _invalid(f"{source}: training_config must be a mapping of sections")
    out = {}
    for name, body in doc.items():
        if name not in SECTIONS:
            close = difflib.get_close_matches(str(name), SECTIONS, n=1)
            hint = f"did you mean {close[0]}?" if close else None
            raise _invalid(
                f"{source}: unknown section {name!r}; the sections are {', '.join(SECTIONS)}",
                hint,
            )
        body = body or {}
        if not isinstance(body, dict):
            raise _invalid(f"{source}: {name} must be a mapping, got {type(body).__name__}")
        for key in body:
            if key not in ACCEPTED[name]:
                close = difflib.get_close_matches(str(key), sorted(ACCEPTED[name]), n=1)
                hint = f"did you mean {close[0]!r}?" if close else None
                raise _invalid(
                    f"{source}: unknown key {name}.{key}; accepted keys in {name}: "
                    f"{', '.join(sorted(ACCEPTED[name]))}",
                    hint,
                )
        out[name] = body
    return out


def _typed(section: str, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = False if isinstance(value, bool) and bool not in kinds else isinstance(value, kinds)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise _invalid(f"{section}.{key} must be {names}, got {value!r}")
    return value


def load(path: str | Path | None, method: str) -> TuningConfig:
    """Read and check a training_config.yaml (or None for the defaults) for `method`."""
    if method not in ("qlora", "lora"):
        raise _invalid(f"unknown tuning method {method!r}; use qlora or lora")
    source = str(path) if path else "defaults"
    doc = None
    if path:
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise _invalid(f"cannot read tuning config {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise _invalid(f"{path} is not valid YAML: {exc}") from exc
    return from_sections(_sections(doc, source), method, source)


def from_sections(sections: dict[str, dict[str, Any]], method: str, source: str) -> TuningConfig:
    notes = [
        f"{name}.{key} has no effect in this runtime"
        for name, body in sections.items()
        for key in body
        if key in _NO_EFFECT[name]
    ]
    q = sections.get("QuantizationConfig", {})
    load_4 = _typed(
        "QuantizationConfig", "load_in_4bit", q.get("load_in_4bit", method == "qlora"), bool
    )
    if _typed("QuantizationConfig", "load_in_8bit", q.get("load_in_8bit", False), bool):
        raise _invalid(
            f"{source}: QuantizationConfig.load_in_8bit is not supported; QLoRA here is 4-bit",
            "set load_in_4bit: true (NF4) instead",
        )
    if method == "lora" and load_4:
        raise _invalid(
            f"{source}: for method lora, QuantizationConfig.load_in_4bit must not be true"
        )
    if method == "qlora" and not load_4:
        raise _invalid(f"{source}: for method qlora, QuantizationConfig.load_in_4bit must be true")
    quant_type = q.get("bnb_4bit_quant_type", "nf4")
    if quant_type not in ("nf4", "fp4"):
        raise _invalid(
            f"QuantizationConfig.bnb_4bit_quant_type must be nf4 or fp4, got {quant_type!r}"
        )
    quantization = Quantization(
        load_in_4bit=load_4,
        quant_type=quant_type,
        double_quant=_typed("QuantizationConfig", "bnb_4bit_use_double_quant",
                            q.get("bnb_4bit_use_double_quant", True), bool),
        skip_modules=q.get("llm_int8_skip_modules"),
    )  # fmt: skip

    lo = sections.get("LoraConfig", {})
    lora = Lora()
    for key, kind in (("r", int), ("lora_alpha", float), ("lora_dropout", float),
                      ("use_rslora", bool), ("bias", str)):  # fmt: skip
        if key in lo:
            setattr(lora, key.removeprefix("lora_"), _typed("LoraConfig", key, lo[key], kind))
    for key in ("target_modules", "init_lora_weights", "layers_to_transform", "modules_to_save"):
        if key in lo:
            setattr(lora, key, lo[key])
    if lora.r < 1:
        raise _invalid(f"LoraConfig.r must be at least 1, got {lora.r}")
    if not 0 <= lora.dropout < 1:
        raise _invalid(f"LoraConfig.lora_dropout must be in [0, 1), got {lora.dropout}")

    ta = dict(sections.get("TrainingArguments", {}))
    if "max_seq_length" in ta:
        ta["max_length"] = ta.pop("max_seq_length")
    training = Training()
    for name, default in vars(Training()).items():
        if name in ta:
            kind = (int, float) if isinstance(default, float) else type(default)
            setattr(training, name, _typed("TrainingArguments", name, ta[name], kind))
    if training.lr_scheduler_type not in SCHEDULERS:
        raise _invalid(
            f"TrainingArguments.lr_scheduler_type must be one of {', '.join(SCHEDULERS)}, "
            f"got {training.lr_scheduler_type!r}"
        )
    if training.save_strategy not in ("steps", "epoch", "no"):
        raise _invalid(
            f"TrainingArguments.save_strategy must be steps, epoch or no, got {training.save_strategy!r}"
        )
    for name in (
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "max_length",
        "logging_steps",
    ):
        if getattr(training, name) < 1:
            raise _invalid(f"TrainingArguments.{name} must be at least 1")
    if training.max_steps == 0 or training.num_train_epochs <= 0:
        raise _invalid("TrainingArguments: nothing to train (max_steps or num_train_epochs is 0)")

    ds = sections.get("DatasetConfig", {})
    dataset = Dataset()
    mapping = {"shuffle_dataset": ("shuffle", bool), "shuffle_seed": ("shuffle_seed", int),
               "train_test_split": ("train_test_split", float), "messages_column": ("messages_column", str),
               "prompt_column": ("prompt_column", str), "context_column": ("context_column", str),
               "response_column": ("response_column", str), "max_dataset_rows": ("max_rows", int)}  # fmt: skip
    for key, (attr, kind) in mapping.items():
        if ds.get(key) is not None:
            setattr(dataset, attr, _typed("DatasetConfig", key, ds[key], kind))
    if not 0 < dataset.train_test_split <= 1:
        raise _invalid(
            f"DatasetConfig.train_test_split must be in (0, 1], got {dataset.train_test_split}"
        )

    dc = sections.get("DataCollator", {})
    if dc.get("mlm"):
        notes.append("DataCollator.mlm is ignored: causal language models train without masking")

    model = sections.get("ModelConfig", {})
    return TuningConfig(
        method=method,
        quantization=quantization,
        lora=lora,
        training=training,
        dataset=dataset,
        chat_template=model.get("chat_template"),
        trust_remote_code=bool(model.get("trust_remote_code", False)),
        notes=notes,
    )
