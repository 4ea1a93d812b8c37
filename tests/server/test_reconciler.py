"""The server extension on the real local backend: it runs the reconciler while the server
runs (holding the store's lease) and stops it, releasing the lease, when the server stops."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from traitlets.config import Config

from tests.server.conftest import TOKEN

WAIT_S = 60


@pytest.fixture
def jp_server_config():
    return Config(
        {
            "ServerApp": {"jpserver_extensions": {"kaito_jupyter.server": True}},
            "IdentityProvider": {"token": TOKEN},
            "KaitoExtension": {"backend": "local"},
        }
    )


async def _until(check, what: str):
    for _ in range(WAIT_S * 20):
        if check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{what} did not happen within {WAIT_S} s")


async def test_the_server_runs_the_local_reconciler_and_stops_it(kaito, jp_fetch):
    backend = kaito.kaito_backend
    assert type(backend).__name__ == "LocalBackend"
    await _until(lambda: backend.leader() is not None, "the server taking the lease")
    assert backend.leader().pid == os.getpid()  # this server, not a detached controller
    info = json.loads((await jp_fetch("kaito", "api", "backend")).body)
    assert info["backend"] == "local" and info["reconcile"] is True
    assert "reconciler" in info["controller"]

    await kaito.stop_extension()
    assert not kaito._controller_thread.is_alive()
    assert not kaito._watch_thread.is_alive()
    assert backend.leader() is None  # released: the next server or controller takes over


class TestReconcileOff:
    @pytest.fixture
    def jp_server_config(self):
        return Config(
            {
                "ServerApp": {"jpserver_extensions": {"kaito_jupyter.server": True}},
                "IdentityProvider": {"token": TOKEN},
                "KaitoExtension": {"backend": "local", "reconcile": False},
            }
        )

    async def test_a_client_only_server_takes_no_lease(self, kaito, jp_fetch):
        info = json.loads((await jp_fetch("kaito", "api", "backend")).body)
        assert info["reconcile"] is False and "reconcile is off" in info["controller"]
        assert kaito._controller_thread is None
        assert kaito.kaito_backend.leader() is None
