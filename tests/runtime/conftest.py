"""Runtime-tier fixtures: tiny models and adapters built once per session, and inference servers
run as real processes (`python -m kaito_jupyter.runtimes.inference`), one per module or session,
or in this process (ThreadServer) where a test holds the engine or tokenizer at a point (Gate)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kaito_jupyter.runtimes.local_server import LOOPBACK, NotHealthy, free_port, wait_healthy

from tests.runtime import tiny
from tests.testbed.processes import wait_until

ROOT = Path(__file__).resolve().parents[2]


class InferenceServer:
    """One server process on a free loopback port; stopped by its own pid."""

    def __init__(
        self, args: list[str], log_path: Path, *, timeout: float = 180.0, env: dict | None = None
    ):
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        command = [
            sys.executable,
            "-m",
            "kaito_jupyter.runtimes.inference",
            *args,
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--threads",
            "1",
        ]
        self.log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        try:
            wait_healthy(self.url, self.process, timeout=timeout)
        except NotHealthy as exc:
            logs = self.logs()  # before stop() closes the log
            self.stop()
            raise RuntimeError(f"{exc.message}:\n{logs}") from None

    def logs(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def terminate(self) -> None:
        """SIGTERM: the server drains and exits by itself."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> int:
        self.terminate()
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.log.close()
        return code

    # small JSON helpers (the tests also use requests and the openai client)
    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def post(self, path: str, body, timeout: float = 300) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    """Wait for a state the test drives towards, polled often; the deadline only bounds a hang."""
    wait_until(condition, timeout=timeout, what=what, interval=0.01)


class Gate:
    """Wraps a callable so that a test decides when calls go through: `allow(n)` lets n calls
    pass, `open()` all of them; a caller waiting sets `entered`. A test holds the engine or the
    tokenizer at a chosen point this way and looks at everything else meanwhile."""

    def __init__(self, fn, *, when=lambda *args, **kwargs: True):
        self.fn, self.when = fn, when
        self.permits = threading.Semaphore(0)
        self.entered = threading.Event()

    def allow(self, calls: int = 1) -> None:
        self.permits.release(calls)

    def open(self) -> None:
        self.permits.release(10**6)

    def __call__(self, *args, **kwargs):
        if self.when(*args, **kwargs):
            self.entered.set()
            if not self.permits.acquire(timeout=120):
                raise RuntimeError("the test never let this call through")
        return self.fn(*args, **kwargs)


class ThreadServer:
    """The inference server in this process, its event loop on a thread of its own: for tests
    that hold the engine or the tokenizer (Gate) and drive the server by its state."""

    def __init__(self, model_dir: Path, *, max_body: int = 4 << 20, **options):
        from kaito_jupyter.runtimes.inference.loader import Options, load
        from kaito_jupyter.runtimes.inference.server import Server

        self.served, self.engine = load(
            Options(model=str(model_dir), served_name="tiny", **options)
        )
        self.server = Server(self.served, self.engine, max_body=max_body)
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.loop: asyncio.AbstractEventLoop | None = None
        ready = threading.Event()

        async def serve():
            self.loop = asyncio.get_running_loop()
            self.server.listen(self.port, LOOPBACK)
            ready.set()
            await self.server._stopped.wait()

        self.thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
        self.thread.start()
        assert ready.wait(60), "the in-process server did not start"

    def shutdown(self):
        """Start the graceful drain SIGTERM starts; a future of its end."""
        return asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop)

    def close(self) -> None:
        if not self.server._stopped.is_set():
            self.shutdown().result(120)
        self.thread.join(60)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return tiny.build_model(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-adapters")
    return {
        "one": tiny.build_adapter(tiny_model, root / "one", seed=1),
        "two": tiny.build_adapter(tiny_model, root / "two", seed=2, targets=("q_proj", "v_proj")),
    }


@pytest.fixture(scope="session")
def smollm2_checkpoint() -> Path:
    """The packaged SmolLM2, converted once (see runtimes/weights.py)."""
    from kaito_jupyter.runtimes import weights

    return weights.resolve("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_server(smollm2_checkpoint, tmp_path_factory):
    server = InferenceServer(
        ["--preset", "smollm2-135m-instruct"],
        tmp_path_factory.mktemp("smollm2-server") / "server.log",
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_server(tiny_model, tiny_adapters, tmp_path_factory):
    """The tiny model with two adapters, and `one` again at strength 0 and 0.5."""
    server = InferenceServer(
        [
            "--model",
            str(tiny_model),
            "--served-model-name",
            "tiny",
            "--adapter",
            f"one={tiny_adapters['one']}",
            "--adapter",
            f"two={tiny_adapters['two']}:1.0",
            "--adapter",
            f"one-off={tiny_adapters['one']}:0",
            "--adapter",
            f"one-half={tiny_adapters['one']}:0.5",
            "--max-body-bytes",
            str(64 * 1024),
            "--prefill-chunk",
            "32",
            "--step-tokens",
            "64",
        ],
        tmp_path_factory.mktemp("tiny-server") / "server.log",
    )
    yield server
    server.stop()
