"""Checkpoints for resume: the adapter weights, the optimizer state and where the data stood.

`<work dir>/checkpoints/step-NNNNNNNN/` holds adapter_model.safetensors, optimizer.pt and
state.json; state.json is written last and the directory is renamed into place, so a job killed
mid-save leaves no checkpoint that looks complete. A checkpoint from a different run (another
method, adapter shape or dataset) is not resumed: `fingerprint` tells them apart.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class State:
    step: int  # optimizer steps done
    epoch: int  # the epoch the next micro-step belongs to
    position: int  # micro-steps of that epoch already done
    trained_tokens: int
    train_seconds: float
    fingerprint: str


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def root(work_dir: Path) -> Path:
    return work_dir / "checkpoints"


def latest(work_dir: Path, fingerprint_: str) -> tuple[Path, State] | None:
    """The newest complete checkpoint of this run, if any."""
    found = []
    for path in root(work_dir).glob("step-*"):
        state_file = path / "state.json"
        if not state_file.is_file():
            continue
        try:
            state = State(**json.loads(state_file.read_text()))
        except (ValueError, TypeError):
            continue
        if state.fingerprint == fingerprint_:
            found.append((state.step, path, state))
    if not found:
        return None
    _, path, state = max(found, key=lambda item: item[0])
    return path, state


def save(work_dir: Path, model, optimizer, state: State, keep: int) -> Path:
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    base = root(work_dir)
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=base))
    weights = {
        k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()
    }
    save_file(weights, staging / "adapter_model.safetensors")
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    (staging / "state.json").write_text(json.dumps(asdict(state)))
    target = base / f"step-{state.step:08d}"
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    for old in sorted(base.glob("step-*"))[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in base.glob(".saving-*"):  # left by a job killed while saving
        if stale != staging:
            shutil.rmtree(stale, ignore_errors=True)
    return target


def restore(path: Path, model, optimizer) -> None:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
