"""The magics against the real local backend: the SQLite store, the reconciler and a real
inference server process serving the packaged SmolLM2, driven through IPython's
InteractiveShell as a notebook would (apply --wait, get, describe, nodes, logs, chat with a
kept conversation, delete --wait).

The controller runs in this process (a thread holding the lease), so the backend's
ensure_controller finds a live leader and starts no detached controller that would outlive the
test; the runtimes it starts are stopped by deleting the workspace.
"""

from __future__ import annotations

import threading

import pytest
from kaito_jupyter.magics import results as r

from kaito_jupyter import config
from tests.testbed.processes import wait_until
from tests.unit.output import columns, line_with
from tests.unit.shell import kaito_shell

NAME = "workspace-smollm2"
WORKSPACE = f"""apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: {NAME}
inference:
  preset:
    name: smollm2-135m-instruct
"""


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A fresh local backend (its own data and config dirs) with its controller in a thread."""
    from kaito_jupyter.backends.local import LocalBackend
    from kaito_jupyter.backends.local import controller as local_controller

    root = tmp_path_factory.mktemp("magics-local")
    patch = pytest.MonkeyPatch()
    patch.setenv("JUPYTER_CONFIG_DIR", str(root / "config"))
    patch.setenv("JUPYTER_DATA_DIR", str(root / "data"))
    patch.setenv("KAITO_BACKEND", "local")
    patch.delenv("KAITO_LOCAL_DIR", raising=False)
    backend = LocalBackend(config.load())
    stop = threading.Event()
    thread = threading.Thread(
        target=local_controller.run,
        kwargs={"settings": config.load(), "stop": stop, "backend": backend, "threads": 1},
        daemon=True,
    )
    thread.start()
    wait_until(lambda: backend.leader() is not None, timeout=30, what="the controller's lease")
    shell = kaito_shell()
    session = shell.magics_manager.registry["KaitoMagics"].session
    session.backend_override = None
    session.conversations.clear()
    try:
        yield shell, backend
    finally:
        for stored in backend.list():  # nothing left running
            shell.run_line_magic("kaito", f"delete {stored.name} --wait --timeout 120")
        stop.set()
        thread.join(60)
        patch.undo()


def test_apply_wait_get_describe_nodes_logs(local, capsys):
    ip, _ = local
    result = ip.run_cell_magic("kaito", "apply --wait --timeout 900", WORKSPACE)
    printed = capsys.readouterr()
    assert "error:" not in printed.err, printed.err  # (the in-process controller logs there)
    assert isinstance(result, r.AppliedResult), printed.out
    assert result[0].phase == "ready", printed.out
    lines = printed.out.splitlines()
    assert lines[0] == f"workspace.kaito.sh/{NAME} created"
    line_with(printed.out, NAME, "InferenceReady=True")
    assert lines[-1].startswith(f"{NAME}: ready in ")

    listed = ip.run_line_magic("kaito", "get")
    assert columns(listed._text(), NAME)[1:4] == ["True", "True", "True"]  # no INSTANCE here
    ws = ip.run_line_magic("kaito", f"get {NAME}")
    assert ws.phase == "ready" and ws.conditions["InferenceReady"] == "True"

    described = ip.run_line_magic("kaito", f"describe {NAME}")._text()
    assert line_with(described, "Endpoint:").split()[1].startswith("http://127.0.0.1:")
    line_with(described, "InferenceReady", "True")

    nodes = ip.run_line_magic("kaito", "nodes")
    assert any(f"default/{NAME}" in n.workspaces or NAME in n.workspaces for n in nodes)

    logs = ip.run_line_magic("kaito", f"logs {NAME} --tail 5")
    assert isinstance(logs, r.LogLines) and 0 < len(logs) <= 5


def test_chat_streams_from_the_local_server_and_keeps_the_conversation(local, capsys):
    ip, backend = local
    if backend.list() == []:
        ip.run_cell_magic("kaito", "apply --wait --timeout 900", WORKSPACE)
        capsys.readouterr()
    reply = ip.run_cell_magic(
        "kaito", f"chat {NAME} --max-tokens 12 --temperature 0", "What is the capital of France?"
    )
    printed = capsys.readouterr()
    assert "error:" not in printed.err, printed.err  # (the in-process controller logs there)
    assert isinstance(reply, r.ChatReply) and reply.text.strip()
    assert printed.out == reply.text + "\n"  # what streamed is the answer
    assert reply.usage.completion_tokens <= 12
    again = ip.run_cell_magic("kaito", f"chat {NAME} --max-tokens 8 --temperature 0", "Why?")
    assert again.text.strip()
    session = ip.magics_manager.registry["KaitoMagics"].session
    turns = session.conversations[NAME].turns
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[1]["content"] == reply.text


def test_delete_wait_removes_it(local, capsys):
    ip, backend = local
    if backend.list() == []:
        ip.run_cell_magic("kaito", "apply --dry-run", WORKSPACE)
        pytest.fail("nothing to delete: the apply test did not leave its workspace")
    result = ip.run_line_magic("kaito", f"delete {NAME} --wait --timeout 120")
    assert "error:" not in capsys.readouterr().err
    assert result._text() == f'workspace.kaito.sh "{NAME}" deleted'
    assert backend.list() == []
    assert ip.run_line_magic("kaito", "get")._text() == "No workspaces found."
