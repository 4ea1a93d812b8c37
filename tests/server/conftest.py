"""The server tier: a real Jupyter server (pytest-jupyter) with the kaito extension loaded.

pytest-jupyter's fixtures are imported here, not registered for the whole suite: its autouse
fixtures (an event loop and a ServerApp cleanup around every test) belong to this tier only.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from kaito_jupyter.runtimes.local_server import LOOPBACK, free_port, wait_healthy
from pytest_jupyter.jupyter_core import *  # noqa: F403  (fixtures and the async test hooks)
from pytest_jupyter.jupyter_server import *  # noqa: F403
from pytest_jupyter.pytest_tornasync import *  # noqa: F403
from traitlets.config import Config

from kaito_jupyter.server.app import KaitoExtension
from tests.server.memory import MemoryBackend

TOKEN = "kaito-test-token"


@pytest.fixture
def jp_server_config():
    return Config(
        {
            "ServerApp": {"jpserver_extensions": {"kaito_jupyter.server": True}},
            "IdentityProvider": {"token": TOKEN},
            "KaitoExtension": {"backend_factory": "tests.server.memory:factory"},
        }
    )


@pytest.fixture
def kaito(jp_serverapp, jp_asyncio_loop) -> KaitoExtension:
    """The running extension, started as ServerApp.start would (pytest-jupyter does not)."""
    (ext,) = [
        app
        for apps in jp_serverapp.extension_manager.extension_apps.values()
        for app in apps
        if isinstance(app, KaitoExtension)
    ]
    jp_asyncio_loop.run_until_complete(ext._start_jupyter_server_extension(jp_serverapp))
    yield ext
    jp_asyncio_loop.run_until_complete(ext.stop_extension())


@pytest.fixture
def memory(kaito) -> MemoryBackend:
    return kaito.kaito_backend


@pytest.fixture(scope="session")
def smollm2_url():
    """The real inference server on the packaged SmolLM2: what chat is proxied to."""
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kaito_jupyter.runtimes.inference",
            "--preset",
            "smollm2-135m-instruct",
            "--port",
            str(port),
            "--log-level",
            "WARNING",
        ]
    )
    try:
        wait_healthy(url, server, timeout=300)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
