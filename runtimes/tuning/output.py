"""Where the adapter goes: a directory in the standard peft layout, and optionally an image.

`--output` names a directory, or an image reference (registry.example.com/team/adapter:1.0).
For an image, the adapter is written to the work directory first and then pushed as Kaito's
adapter image layout (see runtimes/oci/), with the push secret's credentials.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from kaito_jupyter.runtimes.oci.reference import looks_like_image

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def is_image(output: str) -> bool:
    return looks_like_image(output)


def default_work_dir(output: str) -> Path:
    """Where progress.jsonl, checkpoints/ and downloaded inputs/ live: the output directory
    itself, or (for an image) KAITO_TUNING_WORKDIR or a cache directory keyed by the image, so
    that a restarted job finds its checkpoints."""
    configured = os.environ.get("KAITO_TUNING_WORKDIR")
    if not is_image(output):
        return Path(output).expanduser()
    from kaito_jupyter.runtimes.weights import cache_root

    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", output)[:60]
    key = hashlib.sha256(output.encode()).hexdigest()[:8]
    base = Path(configured) if configured else cache_root() / "tuning"
    return base / f"{slug}-{key}"


def save_adapter(model, directory: Path, *, base_model: str) -> Path:
    """Write adapter_config.json + adapter_model.safetensors (peft's layout) into `directory`.

    adapter_config.json names `base_model` (the preset), not this job's local checkpoint path:
    the inference runtime resolves the base by preset name.
    """
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True, save_embedding_layers=False)
    missing = [name for name in ADAPTER_FILES if not (directory / name).is_file()]
    if missing:
        raise RuntimeError(f"peft wrote no {', '.join(missing)} in {directory}")
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_model
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    return directory


def push(directory: Path, image: str, *, secret: str | None, preset: str | None) -> str:
    """Push the adapter files as an image; returns the manifest digest."""
    from kaito_jupyter.runtimes import oci

    staging = directory
    files = [directory / name for name in ADAPTER_FILES]
    if any(p.name not in ADAPTER_FILES for p in directory.iterdir() if p.is_file()):
        # Only the adapter goes into the image (peft also writes a README).
        staging = directory.parent / (directory.name + ".push")
        staging.mkdir(exist_ok=True)
        for path in files:
            target = staging / path.name
            target.unlink(missing_ok=True)
            os.link(path, target)
    annotations = {oci.ANNOTATION_MODEL_NAME: preset} if preset else {}
    return oci.push_directory(
        staging, image.removeprefix("oci://"), secret=secret, annotations=annotations
    )
