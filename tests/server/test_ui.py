"""The sidebar in a real JupyterLab, driven in Debian's chromium (Playwright), on the local
backend with the packaged SmolLM2: a workspace applied by the `kaito` command appears and turns
ready, a preset deploys from the form, chat answers streaming, workspaces are deleted.

The lab runs as a person would run it (`python -m jupyterlab`, this checkout's editable
install, token auth, unauthenticated access disallowed), with its own Jupyter config, data and
runtime directories, so its local store is this module's alone. Screenshots of the sidebar are
compared with the committed baselines in tests/server/baselines/ (KAITO_UPDATE_BASELINES=1
rewrites them).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from kaito_jupyter.runtimes.local_server import LOOPBACK, free_port, wait_healthy

CHROMIUM = Path("/usr/bin/chromium")
BASELINES = Path(__file__).parent / "baselines"
HOW_TO_INSTALL = (
    "the UI tests need Debian's chromium at /usr/bin/chromium and the playwright package: "
    "run `make prerequisites` (apt-get install chromium) and `make install`"
)
PRESET = "smollm2-135m-instruct"
CLI_WORKSPACE = f"""\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: cli-smollm2
inference:
  preset:
    name: {PRESET}
"""
READY_S = 300_000  # ms: a cold SmolLM2 start on a busy 2-core machine


@dataclass
class Lab:
    url: str
    token: str
    env: dict[str, str]
    root: Path

    def api(self, path: str, method: str = "GET", body: dict | None = None):
        request = urllib.request.Request(
            f"{self.url}/kaito/api/{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def kaito(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """The `kaito` command, on the same local store as the lab."""
        return subprocess.run(
            [sys.executable, "-m", "kaito_jupyter.cli", *args],
            input=stdin, env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip


# pytest-jupyter's autouse fixtures (an event loop and a ServerApp cleanup around each test)
# are for the in-process server tests; here the server is its own process, and Playwright's sync
# API runs a loop of its own that they must not close.
@pytest.fixture
def jp_asyncio_loop():
    yield None


@pytest.fixture
def jp_server_cleanup():
    yield


def _ours(marker: str) -> list[int]:
    """Processes started with this module's data directory in their environment."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail(HOW_TO_INSTALL, pytrace=False)
    if not CHROMIUM.exists():
        pytest.fail(HOW_TO_INSTALL, pytrace=False)
    root = tmp_path_factory.mktemp("lab")
    dirs = {name: root / name for name in ("config", "data", "runtime", "notebooks")}
    for d in dirs.values():
        d.mkdir()
    # No "news" prompt over the sidebar.
    (dirs["config"] / "labconfig").mkdir()
    (dirs["config"] / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "KAITO_", "KUBE"))}
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        KAITO_BACKEND="local",
        KAITO_JUPYTER_CACHE=os.environ.get("KAITO_JUPYTER_CACHE", ""),
        OMP_NUM_THREADS="1",
    )
    env = {k: v for k, v in env.items() if v}
    token = secrets.token_hex(16)
    port = free_port()
    log = (root / "lab.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
         f"--ServerApp.ip={LOOPBACK}", f"--IdentityProvider.token={token}",
         "--ServerApp.allow_root=True",  # the test machine runs as root
         "--ServerApp.allow_unauthenticated_access=False",
         f"--ServerApp.root_dir={dirs['notebooks']}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )  # fmt: skip
    url = f"http://{LOOPBACK}:{port}"
    lab = Lab(url, token, env, root)
    try:
        wait_healthy(url, process, timeout=120, path="/login")
        yield lab
    finally:
        try:
            for ws in lab.api("workspaces")["items"]:
                lab.api(f"workspaces/{ws['name']}", "DELETE")
            deadline = time.monotonic() + 60
            while lab.api("workspaces")["items"] and time.monotonic() < deadline:
                time.sleep(0.5)
        except OSError:
            pass
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        for pid in _ours(str(dirs["data"])):  # runtimes outlive their controller by design
            os.kill(pid, signal.SIGKILL)
        log.close()
        print((root / "lab.log").read_text()[-4000:])


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-background-networking"],
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=lab.url)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{lab.url}/lab?reset&token={lab.token}")
        page.wait_for_selector("#jp-main-dock-panel")
        page.click('[data-id="kaito-jupyter-sidebar"]')
        page.wait_for_selector(".jp-Kaito-backend-select")
        yield page
        browser.close()


def row(page, name: str):
    return page.locator(f'.jp-Kaito-workspace[data-name="{name}"]')


def compare_with_baseline(page, name: str) -> None:
    """The sidebar against its committed baseline, with what changes run to run masked (ages,
    endpoints' ports, the store's path); a few per cent of pixels may differ (antialiasing)."""
    from io import BytesIO

    from PIL import Image, ImageChops

    sidebar = page.locator("#kaito-jupyter-sidebar")
    masks = [page.locator(s) for s in (".jp-Kaito-age", ".jp-Kaito-endpoint", ".jp-Kaito-target")]
    shot = sidebar.screenshot(mask=masks, animations="disabled", caret="hide")
    baseline = BASELINES / f"{name}.png"
    if os.environ.get("KAITO_UPDATE_BASELINES") == "1":
        baseline.write_bytes(shot)
    if not baseline.exists():
        pytest.fail(f"no baseline {baseline}: run with KAITO_UPDATE_BASELINES=1 to write it")
    new = Image.open(BytesIO(shot)).convert("RGB")
    old = Image.open(baseline).convert("RGB")
    (BASELINES.parent / "baselines-last").mkdir(exist_ok=True)
    (BASELINES.parent / "baselines-last" / f"{name}.png").write_bytes(shot)
    assert new.size == old.size, f"{name}: {new.size} against the baseline's {old.size}"
    diff = ImageChops.difference(new, old).convert("L").point(lambda v: 255 if v > 48 else 0)
    changed = sum(diff.histogram()[255:]) / (new.size[0] * new.size[1])
    assert changed < 0.03, f"{name}: {changed:.1%} of the sidebar differs from {baseline}"


def test_a_workspace_applied_by_the_cli_appears_and_turns_ready(lab, page):
    from playwright.sync_api import expect

    applied = lab.kaito("apply", "-f", "-", stdin=CLI_WORKSPACE)
    assert applied.returncode == 0, applied.stderr
    cli = row(page, "cli-smollm2")
    expect(cli).to_be_visible()  # pushed: nothing reloads the page
    expect(cli).to_have_attribute("data-phase", "ready", timeout=READY_S)
    expect(cli.locator('[data-condition="InferenceReady"]')).to_have_attribute(
        "data-state", "ready"
    )
    expect(cli.locator(".jp-Kaito-endpoint")).to_contain_text("http://127.0.0.1:")
    expect(page.locator(".jp-Kaito-node").first).to_contain_text("cli-smollm2")
    compare_with_baseline(page, "sidebar-ready")


def test_a_preset_deploys_from_the_form(lab, page):
    from playwright.sync_api import expect

    page.fill(".jp-Kaito-search", "smollm2")
    preset = page.locator(f'[data-preset="{PRESET}"]')
    preset.get_by_role("button", name="Deploy…").click()
    form = preset.locator("form.jp-Kaito-deploy")
    form.locator('input[name="name"]').fill("ui-smollm2")
    options = form.locator('select[name="instanceType"] option')
    assert options.first.text_content() == "this machine"
    compare_with_baseline(page, "sidebar-deploy-form")
    form.get_by_role("button", name="Deploy").click()
    deployed = row(page, "ui-smollm2")
    expect(deployed).to_be_visible()
    assert lab.api("workspaces/ui-smollm2")["summary"]["preset"] == PRESET
    expect(deployed).to_have_attribute("data-phase", "ready", timeout=READY_S)


def test_chat_lists_ready_workspaces_and_streams(lab, page):
    from playwright.sync_api import expect

    row(page, "ui-smollm2").get_by_role("button", name="Chat").click()
    chat = page.locator(".jp-Kaito-chat").last
    picker = chat.locator('select[aria-label="Workspace"]')
    expect(picker).to_have_value("ui-smollm2")
    names = sorted(picker.locator("option").all_text_contents())
    assert names == ["cli-smollm2", "ui-smollm2"]
    # Record every length the answer passes through: streamed means more than one.
    page.evaluate(
        """() => { window.kaitoLengths = [];
        new MutationObserver(() => {
          const a = document.querySelector('.jp-Kaito-chat [data-role="assistant"]');
          if (a) { window.kaitoLengths.push(a.textContent.length); }
        }).observe(document.body, {subtree: true, childList: true, characterData: true}); }"""
    )
    chat.locator("textarea").fill("What is the capital of France?")
    chat.get_by_role("button", name="Send").click()
    expect(chat.get_by_role("button", name="Send")).to_be_enabled(timeout=120_000)
    answer = chat.locator('[data-role="assistant"]').last
    assert answer.text_content().strip(), "no answer"
    lengths = [n for n in page.evaluate("window.kaitoLengths") if n > 0]
    assert len(set(lengths)) > 1, f"the answer appeared at once, not streamed: {lengths}"
    expect(chat.locator(".jp-Kaito-error")).to_have_count(0)


def test_logs_open_in_the_main_area(lab, page):
    from playwright.sync_api import expect

    row(page, "cli-smollm2").get_by_role("button", name="Logs").click()
    expect(page.locator(".jp-Kaito-logs pre").last).not_to_be_empty()


def test_workspaces_are_deleted_with_a_confirmation(lab, page):
    from playwright.sync_api import expect

    for name in ("ui-smollm2", "cli-smollm2"):
        row(page, name).get_by_role("button", name="Delete").click()
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text(f"Delete {name}?")
        dialog.get_by_role("button", name="Delete").click()
        expect(row(page, name)).to_have_count(0, timeout=120_000)
    assert lab.api("workspaces")["items"] == []
    expect(page.locator(".jp-Kaito-empty").first).to_be_visible()
