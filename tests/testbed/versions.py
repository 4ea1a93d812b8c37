"""The pinned versions of everything the test bed builds, and where the builds are cached.

Each version is one the Go module proxy serves. etcd is pinned to the etcd that
k8s.io/kubernetes itself requires, so the four control-plane programs share one module graph
and one `go build` compiles their common packages once.
"""

from __future__ import annotations

import os
from pathlib import Path

KUBERNETES = "v1.37.2"
ETCD = "v3.7.0"
KWOK = "v0.8.0"

# The control-plane programs, as the bed starts them.
KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
BINARIES = ("etcd", *KUBE_COMMANDS, "kwok")


def cache_root() -> Path:
    """Everything expensive lives here, outside the repository (KAITO_JUPYTER_CACHE overrides)."""
    override = os.environ.get("KAITO_JUPYTER_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "kaito-jupyter"


def tag() -> str:
    return f"kubernetes-{KUBERNETES}_etcd-{ETCD}_kwok-{KWOK}"


def bin_dir() -> Path:
    return cache_root() / "testbed" / tag()
