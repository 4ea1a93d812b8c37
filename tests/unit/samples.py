"""Workspaces the unit tests start from, and a helper to vary them."""

from __future__ import annotations

import copy
from pathlib import Path

WORKSPACES = Path(__file__).resolve().parents[2] / "notebooks" / "workspaces"

INFERENCE = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "Workspace",
    "metadata": {"name": "workspace-phi-3-mini"},
    "resource": {
        "instanceType": "Standard_NC6s_v3",
        "labelSelector": {"matchLabels": {"apps": "phi-3"}},
    },
    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
}
TUNING = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "Workspace",
    "metadata": {"name": "workspace-tuning-phi-3"},
    "resource": {
        "instanceType": "Standard_NC6s_v3",
        "labelSelector": {"matchLabels": {"app": "tuning-phi-3"}},
    },
    "tuning": {
        "preset": {"name": "phi-3-mini-128k-instruct"},
        "method": "qlora",
        "input": {
            "urls": [
                "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/train.parquet"
            ]
        },
        "output": {"image": "myacr.azurecr.io/adapters/phi-3:0.0.1", "imagePushSecret": "acr-push"},
    },
}


def adapters(n: int, strength="1.0", name=lambda i: f"adapter-{i}"):
    return [
        {"source": {"name": name(i), "image": f"myacr.azurecr.io/a{i}:1"}, "strength": strength}
        for i in range(n)
    ]


def with_(base: dict, **changes) -> dict:
    """A copy of `base` with dotted paths set (None deletes)."""
    out = copy.deepcopy(base)
    for dotted, value in changes.items():
        keys = dotted.split("__")
        target = out
        for k in keys[:-1]:
            target = target.setdefault(k, {})
        if value is None:
            target.pop(keys[-1], None)
        else:
            target[keys[-1]] = value
    return out
