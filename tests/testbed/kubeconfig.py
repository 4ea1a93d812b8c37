"""kubeconfig files for the bed: one per identity, all pointing at the same API server."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

CONTEXT = "kaito-testbed"


def kubeconfig(server: str, ca_pem: bytes, token: str, user: str = "admin") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user}}],
        "current-context": CONTEXT,
    }


def write(path: Path, server: str, ca_pem: bytes, token: str, user: str = "admin") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig(server, ca_pem, token, user), sort_keys=False))
    path.chmod(0o600)
    return path
