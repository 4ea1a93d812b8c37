"""A real OCI registry on loopback: Debian's `docker-registry` (CNCF distribution 2.8).

Plain HTTP on 127.0.0.1, no auth, storage in a scratch directory, deletes enabled. The
packaged config in /etc/docker/registry is never read: it listens on every interface.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

from kaito_jupyter.runtimes.local_server import LOOPBACK, free_port

from tests.testbed.processes import Supervisor, wait_until

INSTALL_HINT = (
    "the OCI registry is Debian's docker-registry package: run `make prerequisites` "
    "(or `apt-get install docker-registry`)"
)


ALLOW_ENV = "KAITO_ALLOWED_PRIVATE_REGISTRIES"  # the allowed_private_registries setting


class RegistryMissing(RuntimeError):
    pass


def allow_registry(address: str) -> None:
    """Let the OCI client (in this process and the ones it starts) reach a loopback registry of
    the test bed: the product refuses private registries unless the setting lists them."""
    listed = [a for a in os.environ.get(ALLOW_ENV, "").split(",") if a]
    if address not in listed:
        os.environ[ALLOW_ENV] = ",".join([*listed, address])


def registry_binary() -> str:
    found = shutil.which("docker-registry") or shutil.which("registry")
    if not found:
        raise RegistryMissing(f"docker-registry was not found on PATH: {INSTALL_HINT}")
    return found


def registry_config(port: int, storage: Path) -> dict:
    return {
        "version": 0.1,
        "log": {"level": "warn", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        # The debug server and health checks are off: nothing else listens.
        "http": {"addr": f"{LOOPBACK}:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
    }


def start_registry(supervisor: Supervisor, workdir: Path, timeout: float = 30) -> str:
    """Start the registry and return its `host:port` once /v2/ answers."""
    binary = registry_binary()
    port = free_port()
    storage = workdir / "registry-storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = workdir / "registry.json"
    # distribution's config is YAML; JSON is YAML, and needs no dependency to write.
    config.write_text(json.dumps(registry_config(port, storage), indent=2))
    # REGISTRY_* variables would override the file; start from an environment without them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    program = supervisor.start("registry", [binary, "serve", str(config)], env=env)
    address = f"{LOOPBACK}:{port}"

    def answers() -> bool:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as response:
            return response.status == 200

    wait_until(answers, timeout=timeout, what=f"OCI registry at {address}", programs=[program])
    return address
