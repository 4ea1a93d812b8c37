"""Every verb of `%kaito` / `%%kaito` through IPython's InteractiveShell, against an in-memory
backend: parsing, the results' objects and renderings, errors as short blocks."""

from __future__ import annotations

import http.server
import json
import threading
from typing import ClassVar

import pytest
import yaml
from kaito_jupyter.magics import results as r
from kaito_jupyter.magics.args import adapter_arg, parse

from kaito_jupyter.backends.base import Endpoint, Event, Node

from .memory_backend import MemoryBackend, crashing, provisioning, ready
from .output import columns, line_with
from .samples import INFERENCE, TUNING, with_
from .shell import kaito_shell

NAME = "workspace-phi-3-mini"


@pytest.fixture(scope="module")
def ip():
    return kaito_shell()


@pytest.fixture
def backend(ip, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    session = ip.magics_manager.registry["KaitoMagics"].session
    b = MemoryBackend()
    session.backend_override = b
    session.conversations.clear()
    yield b
    session.backend_override = None


def kaito(ip, line: str, cell: str | None = None):
    if cell is None:
        return ip.run_line_magic("kaito", line)
    return ip.run_cell_magic("kaito", line, cell)


def bundle(result) -> dict:
    data = result._repr_mimebundle_()
    assert set(data) >= {"text/plain", "text/html"}
    return data


# ------------------------------------------------------------------------- arguments


def test_adapter_strength_is_a_trailing_number_in_0_1():
    assert adapter_arg("myacr.azurecr.io/adapters/phi-3:0.0.1:0.5") == (
        "myacr.azurecr.io/adapters/phi-3:0.0.1",
        0.5,
    )
    assert adapter_arg("myacr.azurecr.io/adapters/phi-3:0.0.1") == (
        "myacr.azurecr.io/adapters/phi-3:0.0.1",
        1.0,
    )
    assert adapter_arg("./adapter:1") == ("./adapter", 1.0)
    assert adapter_arg("repo:1.0:1") == ("repo:1.0", 1.0)


def test_every_verb_parses_its_flags():
    args = parse(["deploy", "phi-3-mini-4k-instruct", "-i", "Standard_NC6s_v3", "--count", "2"])
    assert (args.verb, args.instance_type, args.count) == ("deploy", "Standard_NC6s_v3", 2)
    args = parse(["tune", "phi-3", "--method", "qlora", "--input", "https://x/a.parquet",
                  "--input", "https://x/b.parquet", "--output", "acr.io/a:1"])  # fmt: skip
    assert args.inputs == ["https://x/a.parquet", "https://x/b.parquet"]
    args = parse(["chat", NAME, "--new", "--system", "be brief", "--max-tokens", "8",
                  "--temperature", "0.5", "--adapter", "a"])  # fmt: skip
    assert (args.new, args.system, args.max_tokens, args.temperature, args.adapter) == (
        True, "be brief", 8, 0.5, "a")  # fmt: skip
    assert parse(["logs", NAME, "-f", "--tail", "5"]).tail == 5
    assert parse(["get", NAME, "-o", "json"]).output == "json"
    args = parse(["use", "aks", "--subscription", "s", "--resource-group", "g", "--cluster", "c"])
    assert (args.backend, args.subscription, args.resource_group, args.cluster) == (
        "aks", "s", "g", "c")  # fmt: skip


def test_bad_flags_are_a_short_message_with_the_verbs_usage(ip, backend, capsys):
    assert kaito(ip, "get --bogus") is None
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: unrecognized arguments: --bogus",
        "  hint: usage: %kaito get [-h] [-o {wide,yaml,json}] [name]",
    ]
    kaito(ip, "deploy phi-3 --count 0")
    assert "argument --count: 0 must be at least 1" in capsys.readouterr().err
    kaito(ip, "aply")
    assert capsys.readouterr().err.splitlines() == [
        "error: unknown verb 'aply'",
        "  hint: did you mean apply?",
    ]


def test_help_and_help_per_verb(ip, backend, capsys):
    kaito(ip, "help")
    out = capsys.readouterr().out
    for verb in ("apply", "deploy", "tune", "chat", "get", "describe", "delete", "logs",
                 "presets", "nodes", "use", "help"):  # fmt: skip
        line_with(out, f"  {verb} ")
    kaito(ip, "tune --help")
    out = capsys.readouterr().out
    assert out.startswith("usage: %kaito tune")
    assert "--method {qlora,lora}" in out
    kaito(ip, "help chat")
    assert "--max-tokens" in capsys.readouterr().out


# --------------------------------------------------------------------- apply and get


def test_apply_creates_then_reports_unchanged_and_configured(ip, backend):
    text = yaml.safe_dump(INFERENCE)
    result = kaito(ip, "apply", text)
    assert isinstance(result, r.AppliedResult)
    assert result._text() == f"workspace.kaito.sh/{NAME} created"
    assert result.names == [NAME] and result[0].phase == "pending"
    assert bundle(result)["text/html"].startswith("<pre>")
    assert kaito(ip, "apply", text)._text() == f"workspace.kaito.sh/{NAME} unchanged"
    changed = yaml.safe_dump(with_(INFERENCE, metadata__labels={"team": "ml"}))
    assert kaito(ip, "apply", changed)._text() == f"workspace.kaito.sh/{NAME} configured"
    assert backend.controller_ensured == 3


def test_apply_takes_several_documents_and_interpolates_variables(ip, backend):
    ip.user_ns["preset"] = "phi-3-mini-128k-instruct"
    second = with_(INFERENCE, metadata__name="second")
    second["inference"]["preset"]["name"] = "{preset}"
    text = yaml.safe_dump_all([INFERENCE, second])
    text += "---\n" + "apiVersion: kaito.sh/v1alpha1\nkind: Workspace\nmetadata: {name: third}\n"
    text += "resource: {instanceType: Standard_NC6s_v3, labelSelector: {matchLabels: {a: b}}}\n"
    text += "inference: {preset: {name: phi-3-mini-4k-instruct}}\n"
    result = kaito(ip, "apply", text)
    assert result.names == [NAME, "second", "third"]
    assert backend.items["second"].data["inference"]["preset"]["name"] == "phi-3-mini-128k-instruct"


def test_apply_shows_what_the_backend_says_about_its_controller(ip, backend, capsys):
    backend.ensure_controller = lambda: "no controller reconciles workspaces in this cluster yet"
    kaito(ip, "apply", yaml.safe_dump(INFERENCE))
    assert capsys.readouterr().out == (
        "note: no controller reconciles workspaces in this cluster yet\n"
    )


def test_apply_dry_run_changes_nothing(ip, backend):
    result = kaito(ip, "apply --dry-run", yaml.safe_dump(INFERENCE))
    assert result._text() == f"workspace.kaito.sh/{NAME} created (dry run)"
    assert backend.items == {}


def test_apply_from_a_file(ip, backend, tmp_path):
    path = tmp_path / "ws.yaml"
    path.write_text(yaml.safe_dump(INFERENCE))
    assert kaito(ip, f"apply -f {path}").names == [NAME]


def test_apply_without_yaml_says_how(ip, backend, capsys):
    assert kaito(ip, "apply") is None
    assert capsys.readouterr().err.startswith(
        "error: apply needs Workspace YAML in the cell, or -f FILE"
    )


def test_invalid_yaml_is_a_short_block_pointing_at_the_line(ip, backend, capsys):
    cell = yaml.safe_dump(with_(INFERENCE, inference__preset__name="phi-4"), sort_keys=False)
    assert kaito(ip, "apply", cell) is None
    printed = capsys.readouterr()
    assert printed.out == ""
    lines = printed.err.splitlines()
    assert lines[0] == "error: 1 problem found:"
    assert lines[1].startswith("  line 6: resource.instanceType: Insufficient total GPU memory")
    assert lines[2] == "        6 |   instanceType: Standard_NC6s_v3"
    assert lines[3] == "          |                 ^"
    assert "Traceback" not in printed.err
    assert backend.items == {}


def test_debug_shows_the_traceback(ip, backend):
    from kaito_jupyter.errors import ValidationError

    cell = yaml.safe_dump(with_(INFERENCE, inference__preset__name="phi-4"))
    with pytest.raises(ValidationError):
        kaito(ip, "--debug apply", cell)
    with pytest.raises(ValidationError):
        kaito(ip, "apply --debug", cell)


def test_get_lists_with_readme_columns_and_returns_objects(ip, backend):
    assert kaito(ip, "get")._text() == "No workspaces found."
    kaito(ip, "apply", yaml.safe_dump(INFERENCE))
    backend.set_status(NAME, ready(), "2026-12-03T14:03:00Z")
    listed = kaito(ip, "get")
    assert isinstance(listed, r.Workspaces) and listed.names == [NAME]
    text = listed._text()
    assert text.split()[:6] == list(
        ("NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE")
    )
    assert columns(text, NAME)[:5] == [NAME, "Standard_NC6s_v3", "True", "True", "True"]
    assert "<td style='color:#1a7f37'>True</td>" in bundle(listed)["text/html"]
    assert listed[NAME].phase == "ready"
    wide = kaito(ip, "get -o wide")._text()
    assert "TARGETNODECOUNT" in wide and columns(wide, NAME)[-3] == "Ready"

    ws = kaito(ip, f"get {NAME}")
    assert isinstance(ws, r.WorkspaceResult)
    assert ws.phase == "ready" and ws.conditions["InferenceReady"] == "True"
    assert ws.data["resource"]["instanceType"] == "Standard_NC6s_v3"
    assert "WorkspaceInferenceStatusSuccess" in bundle(ws)["text/html"]


def test_get_as_yaml_and_json(ip, backend):
    kaito(ip, "apply", yaml.safe_dump(INFERENCE))
    as_yaml = kaito(ip, f"get {NAME} -o yaml")
    assert yaml.safe_load(as_yaml._text())["metadata"]["name"] == NAME
    as_json = kaito(ip, f"get {NAME} -o json")
    assert json.loads(as_json._text())["kind"] == "Workspace"
    assert as_json._repr_mimebundle_()["application/json"]["metadata"]["name"] == NAME
    listing = kaito(ip, "get -o json")
    assert [i["metadata"]["name"] for i in listing.data["items"]] == [NAME]


def test_get_a_missing_workspace(ip, backend, capsys):
    assert kaito(ip, "get nope") is None
    assert capsys.readouterr().err.splitlines() == [
        'error: workspace "nope" not found',
        "  hint: `kaito get` lists the workspaces",
    ]


# --------------------------------------------------------------- deploy, tune, wait


def test_deploy_builds_kaitos_shape(ip, backend):
    result = kaito(
        ip,
        "deploy phi-3-mini-4k-instruct --instance-type Standard_NC6s_v3 "
        "--adapter myacr.azurecr.io/adapters/phi-3:0.0.1:0.5",
    )
    name = "workspace-phi-3-mini-4k-instruct"
    assert result._text() == f"workspace.kaito.sh/{name} created"
    spec = backend.items[name].data
    assert spec["resource"]["instanceType"] == "Standard_NC6s_v3"
    assert spec["inference"]["adapters"] == [
        {
            "source": {"name": "phi-3", "image": "myacr.azurecr.io/adapters/phi-3:0.0.1"},
            "strength": "0.5",
        }
    ]


def test_deploy_dry_run_shows_the_workspace(ip, backend):
    result = kaito(ip, "deploy phi-3-mini-4k-instruct -i Standard_NC6s_v3 --name x --dry-run")
    text = result._text()
    assert text.splitlines()[0] == "workspace.kaito.sh/x created (dry run)"
    assert yaml.safe_load(text.split("\n", 1)[1])["metadata"] == {"name": "x"}
    assert backend.items == {}


def test_tune_builds_a_tuning_workspace(ip, backend):
    url = TUNING["tuning"]["input"]["urls"][0]
    result = kaito(
        ip,
        f"tune phi-3-mini-128k-instruct --method qlora --input {url} "
        "--output myacr.azurecr.io/adapters/phi-3:0.0.1 --push-secret acr-push "
        "-i Standard_NC6s_v3",
    )
    assert result.names == ["tuning-phi-3-mini-128k-instruct"]
    tuning = backend.items["tuning-phi-3-mini-128k-instruct"].data["tuning"]
    assert tuning["method"] == "qlora" and tuning["input"] == {"name": "dataset", "urls": [url]}
    assert tuning["output"] == {
        "image": "myacr.azurecr.io/adapters/phi-3:0.0.1",
        "imagePushSecret": "acr-push",
    }


def _drive(backend: MemoryBackend, name: str, *derived_at) -> threading.Thread:
    """Write statuses once the workspace exists (the waiting cell is blocked meanwhile)."""

    def run():
        backend.wait_for_watchers(1)  # the cell's wait is watching: no change can be missed
        for derived, at in derived_at:
            backend.set_status(name, derived, at)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_apply_wait_prints_each_condition_change_until_ready(ip, backend, capsys):
    driver = _drive(
        backend,
        NAME,
        (provisioning(1), "2026-12-03T14:00:10Z"),
        (ready(), "2026-12-03T14:04:40Z"),
    )
    result = kaito(ip, "apply --wait --timeout 60", yaml.safe_dump(INFERENCE))
    driver.join()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"workspace.kaito.sh/{NAME} created"
    line_with("\n".join(out), "+10s", "ResourceReady=False Provisioning: 0 of 1 node(s) ready")
    line_with("\n".join(out), "+4m40s", "InferenceReady=True WorkspaceInferenceStatusSuccess")
    assert out[-1] == f"{NAME}: ready in 4m40s"
    assert result[0].phase == "ready"
    assert result._text() == f"workspace.kaito.sh/{NAME} ready"


def test_apply_wait_ends_on_failure_with_the_reason(ip, backend, capsys):
    driver = _drive(backend, NAME, (crashing(), "2026-12-03T14:01:00Z"))
    result = kaito(ip, "apply --wait", yaml.safe_dump(INFERENCE))
    driver.join()
    out = capsys.readouterr().out
    line_with(out, "InferenceReady=False ContainerCrashLoopBackOff: the inference server exited")
    assert result[0].phase == "failed"


def test_apply_wait_timeout_is_an_error_message(ip, backend, capsys):
    assert kaito(ip, "apply --wait --timeout 0.2", yaml.safe_dump(INFERENCE)) is None
    err = capsys.readouterr().err
    assert err.startswith(f"error: workspace {NAME} was not ready after 0 s")


# ------------------------------------------------------------- describe and friends


def test_describe_shows_conditions_events_nodes_endpoint(ip, backend):
    kaito(ip, "apply", yaml.safe_dump(INFERENCE))
    backend.set_status(NAME, ready(("aks-gpu-0",)), "2026-12-03T14:03:00Z")
    backend.event_list[NAME] = [
        Event(
            "2026-12-03T14:01:00Z", "Normal", "Provisioning", "creating agent pool", "Workspace/x"
        )
    ]
    backend.node_list = [Node("aks-gpu-0", "Standard_NC6s_v3", "V100", 1, 1, 16, True, (NAME,))]
    backend.endpoints[NAME] = Endpoint("http://127.0.0.1:9/", model="phi-3")
    result = kaito(ip, f"describe {NAME}")
    text = result._text()
    assert line_with(text, "Phase:").split() == ["Phase:", "ready"]
    assert line_with(text, "Endpoint:").split() == ["Endpoint:", "http://127.0.0.1:9/"]
    line_with(text, "InferenceReady", "True", "WorkspaceInferenceStatusSuccess")
    line_with(text, "Provisioning", "creating agent pool")
    assert columns(text, "aks-gpu-0") == ["aks-gpu-0", "Standard_NC6s_v3", "V100", "1", "1",
                                          "True", NAME]  # fmt: skip
    assert "<h4>Events</h4>" in bundle(result)["text/html"]


def test_nodes(ip, backend):
    assert kaito(ip, "nodes")._text() == "No nodes found."
    backend.node_list = [Node("gpu-0", "Standard_NC6s_v3", "V100", 1, 0, 16, True)]
    result = kaito(ip, "nodes")
    assert result[0].name == "gpu-0"
    assert columns(result._text(), "gpu-0") == ["gpu-0", "Standard_NC6s_v3", "V100", "1", "0",
                                                "True", "-"]  # fmt: skip


def test_delete(ip, backend):
    kaito(ip, "apply", yaml.safe_dump(INFERENCE))
    result = kaito(ip, f"delete {NAME}")
    assert result._text() == f'workspace.kaito.sh "{NAME}" deleting'
    assert backend.items[NAME].deleting


def test_delete_wait_returns_once_it_is_gone(ip, backend):
    kaito(ip, "apply", yaml.safe_dump(INFERENCE))

    def controller():
        backend.wait_for_watchers(1)
        backend.finish_delete(NAME)

    thread = threading.Thread(target=controller, daemon=True)
    thread.start()
    result = kaito(ip, f"delete {NAME} --wait --timeout 60")
    thread.join()
    assert result._text() == f'workspace.kaito.sh "{NAME}" deleted'
    assert NAME not in backend.items


def test_logs_and_tail(ip, backend, capsys):
    kaito(ip, "apply", yaml.safe_dump(INFERENCE))
    backend.add_log(NAME, "one", "two", "three")
    logs = kaito(ip, f"logs {NAME} --tail 2")
    assert list(logs) == ["two", "three"] and logs._text() == "two\nthree"
    backend.add_log(NAME, "four", done=True)
    assert kaito(ip, f"logs {NAME} -f") is None
    assert capsys.readouterr().out == "one\ntwo\nthree\nfour\n"


def test_presets_skus_explain(ip, backend):
    presets = kaito(ip, "presets --tuning")
    assert "phi-3-mini-128k-instruct" in presets._text()
    assert bundle(presets)["text/html"].startswith("<pre>")
    assert "Standard_NC6s_v3" in kaito(ip, "skus --cloud azure")._text()
    text = kaito(ip, "explain phi-3-mini-4k-instruct --instance-type Standard_NC6s_v3")._text()
    assert columns(text, "inference") == ["inference", "9Gi", "16Gi", "+7Gi", "float16", "fits"]


def test_use_writes_the_shared_configuration(ip, backend, tmp_path):
    from kaito_jupyter import config

    result = kaito(ip, "use kubernetes --context kind-x --namespace ml")
    assert result._text() == "using the kubernetes backend (context kind-x, namespace ml)"
    assert config.load().backend == "kubernetes" and config.load().namespace == "ml"
    result = kaito(ip, "use aks --subscription sub --resource-group rg --cluster aks1")
    assert result.settings.azure.cluster_name == "aks1"
    assert "AKS cluster aks1 in rg" in result._text()
    assert kaito(ip, "use local")._text() == "using the local backend (this machine)"
    assert config.load().backend == "local"


def test_use_aks_needs_its_coordinates(ip, backend, capsys):
    kaito(ip, "use aks --subscription sub")
    assert capsys.readouterr().err.startswith(
        "error: `use aks` needs --subscription, --resource-group and --cluster"
    )


def test_status_outside_a_kernel_is_a_static_timeline(ip, backend):
    kaito(ip, "apply", yaml.safe_dump(INFERENCE))
    backend.set_status(NAME, provisioning(2, ("n0",)), "2026-12-03T14:00:30Z")
    status = kaito(ip, f"status {NAME}")
    assert isinstance(status, r.Status)
    text = status._text().splitlines()
    assert text[0] == f"{NAME}: pending (Pending)"
    assert text[1] == "  nodes 1/2  1 of 2 node(s) ready"
    assert "width:50%" in bundle(status)["text/html"]


# ------------------------------------------------------------------------ validate


def test_validate_valid_and_json(ip, backend):
    result = kaito(ip, "validate", yaml.safe_dump(INFERENCE))
    assert result.valid
    assert result._text().startswith(f"workspace.kaito.sh/{NAME} valid (inference: phi-3")
    as_json = kaito(ip, "validate -o json", yaml.safe_dump(INFERENCE))
    assert as_json.data == [{"file": "<cell>", "workspace": NAME, "valid": True, "warnings": []}]
    bad = kaito(
        ip, "validate -o json", yaml.safe_dump(with_(INFERENCE, inference__preset__name="phi-4"))
    )
    assert bad.data[0]["valid"] is False
    assert "Insufficient total GPU memory" in bad.data[0]["errors"][0]


def test_validate_old_checks_immutable_fields(ip, backend, tmp_path, capsys):
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(INFERENCE))
    changed = with_(INFERENCE, resource__instanceType="Standard_NC12s_v3")
    assert kaito(ip, f"validate --old {old}", yaml.safe_dump(changed)) is None
    err = capsys.readouterr().err
    assert "resource.instanceType" in err and "immutable" in err.lower()
    assert kaito(ip, f"validate --old {old}", yaml.safe_dump(INFERENCE)).valid


# ---------------------------------------------------------------------------- chat


class _Chat(http.server.BaseHTTPRequestHandler):
    """A loopback OpenAI-style SSE server: answers with fixed pieces, records each body."""

    bodies: ClassVar[list] = []
    pieces = ("QLoRA ", "is ", "4-bit.")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in self.pieces:
            chunk = {"choices": [{"delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        end = {"choices": [{"delta": {}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 5, "completion_tokens": 3}}  # fmt: skip
        self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    _Chat.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Chat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Chat.bodies
    server.shutdown()


def test_chat_streams_and_keeps_the_conversation(ip, backend, chat_server, capsys):
    url, bodies = chat_server
    kaito(ip, "apply", yaml.safe_dump(INFERENCE))
    backend.set_status(NAME, ready(), "2026-12-03T14:03:00Z")
    backend.endpoints[NAME] = Endpoint(url, model="phi-3-mini-4k-instruct")
    ip.user_ns["topic"] = "QLoRA"
    reply = kaito(ip, f"chat {NAME} --system 'be brief' --max-tokens 16", "What is {topic}?")
    assert capsys.readouterr().out == "QLoRA is 4-bit.\n"
    assert isinstance(reply, r.ChatReply) and reply.text == "QLoRA is 4-bit."
    assert reply.finish_reason == "stop" and reply.usage.completion_tokens == 3
    assert bodies[0]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "What is QLoRA?"},
    ]
    assert bodies[0]["max_tokens"] == 16 and bodies[0]["model"] == "phi-3-mini-4k-instruct"
    kaito(ip, f"chat {NAME} --adapter phi-3-adapter --temperature 0.5 And LoRA?")
    assert [m["role"] for m in bodies[1]["messages"]] == ["system", "user", "assistant", "user"]
    assert bodies[1]["model"] == "phi-3-adapter" and bodies[1]["temperature"] == 0.5
    kaito(ip, f"chat {NAME} --new", "Hi")
    assert bodies[2]["messages"] == [{"role": "user", "content": "Hi"}]


def test_chat_reply_shows_once(ip, backend, chat_server, capsys):
    """The streamed text is the output: the automatic display adds nothing; later, it shows."""
    url, _ = chat_server
    kaito(ip, "apply", yaml.safe_dump(INFERENCE))
    backend.set_status(NAME, ready(), "2026-12-03T14:03:00Z")
    backend.endpoints[NAME] = Endpoint(url)
    ip.run_cell(f"%%kaito chat {NAME}\nHello")
    out = capsys.readouterr().out  # (a terminal writes its Out[n] prompt, with nothing after)
    assert out.count("QLoRA is 4-bit.") == 1 and out.startswith("QLoRA is 4-bit.\n")
    ip.run_cell("_")
    assert "QLoRA is 4-bit." in capsys.readouterr().out


def test_chat_with_a_pending_workspace_says_why(ip, backend, capsys):
    kaito(ip, "apply", yaml.safe_dump(INFERENCE))
    backend.set_status(NAME, provisioning(1), "2026-12-03T14:00:10Z")
    assert kaito(ip, f"chat {NAME}", "Hi") is None
    err = capsys.readouterr().err
    assert err.startswith(f"error: workspace {NAME} is not ready to chat: ResourceNotReady")
    session = ip.magics_manager.registry["KaitoMagics"].session
    assert session.conversations[NAME].turns == []  # a failed prompt is not history


def test_chat_needs_a_prompt(ip, backend, capsys):
    kaito(ip, f"chat {NAME}")
    assert capsys.readouterr().err.startswith("error: chat needs a prompt")


def test_interpolation_leaves_yaml_braces_alone():
    from kaito_jupyter.magics.interpolate import interpolate

    from kaito_jupyter.errors import KaitoError

    class Obj:
        image = "acr.io/a:1"

    ns = {"acr": "myacr", "obj": Obj(), "n": 2}
    assert interpolate("image: {acr}.azurecr.io/x", ns) == "image: myacr.azurecr.io/x"
    assert interpolate("matchLabels: {apps: phi-3}", ns) == "matchLabels: {apps: phi-3}"
    assert interpolate("{unknown} {obj.image} count: {n}", ns) == "{unknown} acr.io/a:1 count: 2"
    assert interpolate("literal {{acr}}", ns) == "literal {acr}"
    assert interpolate("{a: {b: c}}", ns) == "{a: {b: c}}"
    with pytest.raises(KaitoError, match=r"cannot interpolate \{obj.nope\}"):
        interpolate("{obj.nope}", ns)


def test_validate_debug_raises_and_files_with_json(ip, backend, tmp_path):
    from kaito_jupyter.errors import ValidationError

    bad = yaml.safe_dump(with_(INFERENCE, inference__preset__name="phi-4"))
    with pytest.raises(ValidationError):
        kaito(ip, "validate --debug", bad)
    good, wrong = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(INFERENCE))
    wrong.write_text(bad)
    report = kaito(ip, f"validate -f {good} -f {wrong} -o json").data
    assert [(e["file"], e["valid"]) for e in report] == [(str(good), True), (str(wrong), False)]
    text = kaito(ip, f"validate -f {good} -f {wrong}")
    assert not text.valid and f"{wrong}: invalid" in text._text()
