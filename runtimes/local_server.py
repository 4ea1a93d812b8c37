"""A runtime server on this machine: a free loopback port to give it, and waiting until it
answers /health. One helper for `make demo`, the tests, the benchmarks and whatever else starts
an inference server locally. Standard library only."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request

from kaito_jupyter.errors import RuntimeFailure

LOOPBACK = "127.0.0.1"


class NotHealthy(RuntimeFailure):
    """The server exited, or did not answer /health with 200 in time."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on now. The kernel picks an unused ephemeral port; a program
    binding it right after wins the race in practice, and a lost race shows as that program
    failing its health check."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_healthy(
    url: str,
    process: subprocess.Popen | None = None,
    *,
    timeout: float = 300,
    path: str = "/health",
    interval: float = 0.2,
) -> None:
    """Return once `url + path` answers 200; raise NotHealthy as soon as `process` exits, or
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | str = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise NotHealthy(
                f"the server at {url} exited with code {process.returncode}", reason="ServerExited"
            )
        try:
            with urllib.request.urlopen(url + path, timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(interval)
    raise NotHealthy(
        f"the server at {url} was not healthy within {timeout:.0f} s ({last})",
        reason="ServerNotHealthy",
    )
