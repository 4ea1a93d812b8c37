"""The pinned versions of everything the test bed builds, and where the builds are cached.

Each version is one the Go module proxy serves. etcd is pinned to the etcd that
k8s.io/kubernetes itself requires, so the four control-plane programs share one module graph
and one `go build` compiles their common packages once.
"""

from __future__ import annotations

from pathlib import Path

from kaito_jupyter import config

KUBERNETES = "v1.37.2"
ETCD = "v3.7.0"
KWOK = "v0.8.0"

# The control-plane programs, as the bed starts them.
KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
BINARIES = ("etcd", *KUBE_COMMANDS, "kwok")


cache_root = config.cache_root  # everything expensive, outside the repository


def tag() -> str:
    return f"kubernetes-{KUBERNETES}_etcd-{ETCD}_kwok-{KWOK}"


def bin_dir() -> Path:
    return cache_root() / "testbed" / tag()
