"""One helper starts local servers' plumbing (a free port, waiting for /health) for the demo,
the tests and the benchmarks: kaito_jupyter.runtimes.local_server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from kaito_jupyter.runtimes import local_server

from tests.testbed.adversary import Adversary, reply, sequence

ROOT = Path(__file__).resolve().parents[2]


def test_wait_healthy_returns_once_health_answers_200():
    server = Adversary()
    server.on("GET", r"^/health$", sequence(reply(503), reply(503), reply(200, b"{}")))
    try:
        local_server.wait_healthy(server.url, timeout=60, interval=0.01)
        assert len(server.seen("GET", "/health")) == 3
    finally:
        server.close()


def test_wait_healthy_fails_as_soon_as_the_process_exits():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    url = f"http://{local_server.LOOPBACK}:{local_server.free_port()}"
    with pytest.raises(local_server.NotHealthy) as err:
        local_server.wait_healthy(url, process, timeout=600)
    assert err.value.reason == "ServerExited" and "code 3" in err.value.message


def test_there_is_one_such_helper():
    pattern = re.compile(r"^\s*def _?(free_port|wait_healthy)\(", re.M)
    defined = [
        str(path.relative_to(ROOT))
        for folder in ("runtimes", "benchmarks", "tests", "kaito_jupyter")
        for path in (ROOT / folder).rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert defined == ["runtimes/local_server.py"]
