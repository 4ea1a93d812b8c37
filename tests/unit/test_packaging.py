"""The one distribution: what the wheel holds, and where an editable install imports from.

The wheel is built with hatchling straight from this checkout, through both build hooks (the
custom one that maps magics/, presets/ and runtimes/ under kaito_jupyter, and the Jupyter builder
hook for the lab extension). The builder hook reuses kaito_jupyter/labextension/ when it is
already built (`make install` builds it); otherwise it runs `jlpm install` and a production build
here, which needs node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

import kaito_jupyter

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LABEXT_DATA = PurePosixPath("share/jupyter/labextensions/kaito-jupyter")
HOW_TO_INSTALL = (
    "Install Node.js 20.19+ (e.g. `apt-get install nodejs`) and run `make install`, which installs "
    "jupyterlab (jlpm) from the test extra and builds the lab extension."
)


def _build_env() -> dict[str, str]:
    """The environment of the build: this venv's jlpm and jupyter-builder first on PATH."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def _require_lab_extension_toolchain() -> None:
    """Fail (never skip) when the lab extension could not be built here."""
    missing = []
    if shutil.which("node", path=_build_env()["PATH"]) is None:
        missing.append("node is not on PATH")
    for tool in ("jlpm", "jupyter-builder"):
        if not (BIN / tool).exists():
            missing.append(f"{tool} is not in {BIN}")
    try:
        import hatch_jupyter_builder  # noqa: F401
    except ImportError:
        missing.append("hatch-jupyter-builder is not installed")
    if missing:
        pytest.fail(
            f"cannot build the kaito-jupyter wheel: {'; '.join(missing)}. {HOW_TO_INSTALL}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    _require_lab_extension_toolchain()
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=ROOT,
        env=_build_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if build.returncode != 0:
        pytest.fail(
            f"hatchling build failed ({build.returncode}):\n{build.stdout}\n{build.stderr}\n"
            f"{HOW_TO_INSTALL}",
            pytrace=False,
        )
    (path,) = out.glob("kaito_jupyter-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def _names(wheel: zipfile.ZipFile) -> set[str]:
    return set(wheel.namelist())


def test_wheel_installs_the_subpackages_under_kaito_jupyter(wheel):
    names = _names(wheel)
    for name in (
        "kaito_jupyter/__init__.py",
        "kaito_jupyter/magics/__init__.py",
        "kaito_jupyter/presets/skus.yaml",
        "kaito_jupyter/runtimes/weights.py",
    ):
        assert name in names, f"{name} is missing from the wheel"
    presets = {
        PurePosixPath(n).name
        for n in names
        if n.startswith("kaito_jupyter/presets/models/") and n.endswith(".yaml")
    }
    on_disk = {p.name for p in (ROOT / "presets" / "models").glob("*.yaml")}
    assert on_disk, "presets/models/ has no YAML"
    assert presets == on_disk


def test_wheel_has_no_bare_top_level_packages(wheel):
    tops = {PurePosixPath(n).parts[0] for n in _names(wheel)}
    assert not tops & {"magics", "presets", "runtimes", "labextension"}, sorted(tops)
    # The build directory ships once, as shared data, not also inside the package.
    assert not [n for n in _names(wheel) if n.startswith("kaito_jupyter/labextension/")]


def test_wheel_ships_the_lab_extension_as_shared_data(wheel):
    ext = PurePosixPath(f"kaito_jupyter-{kaito_jupyter.__version__}.data/data") / LABEXT_DATA
    names = _names(wheel)

    built = json.loads(wheel.read(str(ext / "package.json")))
    assert built["name"] == "kaito-jupyter"
    assert built["version"] == kaito_jupyter.__version__
    source = json.loads((ROOT / "package.json").read_text())
    assert source["version"] == kaito_jupyter.__version__, "package.json and __version__ differ"

    # The module-federation entry JupyterLab loads, as the built package.json names it.
    load = built["jupyterlab"]["_build"]["load"]
    assert PurePosixPath(load).name.startswith("remoteEntry.")
    assert str(ext / load) in names
    assert str(ext / "static" / "style.js") in names

    install = json.loads(wheel.read(str(ext / "install.json")))
    assert install["packageManager"] == "python"
    assert install["packageName"] == "kaito-jupyter"


def test_editable_install_imports_the_top_level_directories():
    """Outside the checkout (so only the installed finders can resolve them)."""
    probe = (
        "import importlib.util, json, kaito_jupyter, kaito_jupyter.magics\n"
        "print(json.dumps({\n"
        "    'kaito_jupyter': kaito_jupyter.__file__,\n"
        "    'magics': kaito_jupyter.magics.__file__,\n"
        "    'presets': importlib.util.find_spec('kaito_jupyter.presets').origin,\n"
        "    'runtimes': importlib.util.find_spec('kaito_jupyter.runtimes').origin,\n"
        "}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=BIN,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, f"{run.stderr}\nIs the checkout installed? Run `make install`."
    files = {name: Path(path).resolve() for name, path in json.loads(run.stdout).items()}
    assert files["kaito_jupyter"] == ROOT / "kaito_jupyter" / "__init__.py"
    for name in ("magics", "presets", "runtimes"):
        assert files[name] == ROOT / name / "__init__.py", f"kaito_jupyter.{name}: {files[name]}"


def test_wheel_enables_the_server_extension_and_ships_the_settings_schema(wheel):
    data = PurePosixPath(f"kaito_jupyter-{kaito_jupyter.__version__}.data/data")
    config = data / "etc/jupyter/jupyter_server_config.d/kaito_jupyter.json"
    enabled = json.loads(wheel.read(str(config)))
    assert enabled == {"ServerApp": {"jpserver_extensions": {"kaito_jupyter.server": True}}}
    assert "kaito_jupyter/server/events/workspace.yaml" in _names(wheel)
    schema = data / LABEXT_DATA / "schemas/kaito-jupyter/sidebar.json"
    assert "confirmDelete" in json.loads(wheel.read(str(schema)))["properties"]


def test_installed_wheel_lists_both_extensions_enabled(wheel, tmp_path):
    """`pip install` of the wheel into a fresh environment, then Jupyter's own listings. The
    environment borrows this one's dependencies (a .pth after its own site-packages), so
    kaito_jupyter itself comes from the wheel only."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    Path(site, "zz_dependencies.pth").write_text(ours + "\n")
    subprocess.run(
        [BIN / "uv", "pip", "install", "--python", python, "--no-deps", "--quiet", wheel.filename],
        check=True,
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTHON"))}
    run = {"capture_output": True, "text": True, "timeout": 300, "env": clean, "cwd": tmp_path}
    where = subprocess.run(
        [python, "-c", "import kaito_jupyter; print(kaito_jupyter.__file__)"], **run
    )
    assert where.stdout.startswith(site), where.stdout + where.stderr
    # `jupyter server extension list` and `jupyter labextension list`, by module (this
    # environment's scripts are not on PATH).
    server_list = "from jupyter_server.extension.serverextension import main; main()"
    server = subprocess.run([python, "-c", server_list, "list"], **run)
    out = _plain(server.stdout + server.stderr)
    assert f"Config dir: {env}/etc/jupyter\n    kaito_jupyter.server enabled" in out, out
    assert "kaito_jupyter.server" in out and "OK" in out.split("kaito_jupyter.server", 1)[1], out
    lab_list = "from jupyterlab.labextensions import main; main()"
    lab = subprocess.run([python, "-c", lab_list, "list"], **run)
    out = _plain(lab.stdout + lab.stderr)
    assert "kaito-jupyter v" in out and "enabled" in out.split("kaito-jupyter v", 1)[1], out


def _plain(text: str) -> str:
    """Without the terminal colours Jupyter's listings use."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
