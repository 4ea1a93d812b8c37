"""The notebook side stays light, and the magics present errors as messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .output import columns, line_with
from .samples import INFERENCE, with_
from .shell import kaito_shell

HEAVY = ("torch", "transformers", "peft", "bitsandbytes")


def test_load_ext_imports_nothing_heavy():
    code = (
        "import sys, kaito_jupyter, kaito_jupyter.magics;"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_magics_resolve_to_the_repo_directory():
    import kaito_jupyter.magics
    import kaito_jupyter.presets
    import kaito_jupyter.runtimes

    for mod, folder in (
        (kaito_jupyter.magics, "magics"),
        (kaito_jupyter.presets, "presets"),
        (kaito_jupyter.runtimes, "runtimes"),
    ):
        assert mod.__file__.replace("\\", "/").endswith(f"{folder}/__init__.py")


@pytest.fixture(scope="module")
def ip():
    return kaito_shell()


def test_cell_magic_validates_yaml(ip, capsys):
    import yaml

    result = ip.run_cell_magic("kaito", "validate", yaml.safe_dump(INFERENCE))
    assert repr(result).startswith("workspace.kaito.sh/workspace-phi-3-mini valid (")


def test_cell_magic_reports_errors_without_traceback(ip, capsys):
    import yaml

    ip.run_cell_magic(
        "kaito", "validate", yaml.safe_dump(with_(INFERENCE, inference__preset__name="phi-4"))
    )
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.startswith("error: 1 problem found:")
    line_with(printed.err, "line 9: resource.instanceType: Insufficient total GPU memory", "phi-4")


def test_line_magic_verbs(ip, capsys):
    out = repr(
        ip.run_line_magic(
            "kaito", "explain phi-3-mini-4k-instruct --instance-type Standard_NC6s_v3"
        )
    )
    assert columns(out, "inference") == ["inference", "9Gi", "16Gi", "+7Gi", "float16", "fits"]
    ip.run_line_magic("kaito", "frobnicate")
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err.splitlines()[0] == "error: unknown verb 'frobnicate'"


def test_load_ext_loads_only_the_magics_module():
    """`%load_ext kaito_jupyter` imports two modules of ours and no library (no
    command layer, pydantic, widgets or backends: a verb imports what it needs). Measured on
    this machine: about 2-10 ms for the load_ext itself, `%kaito help` about 20 ms."""
    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "before = set(sys.modules)\n"
        "ip.run_line_magic('load_ext', 'kaito_jupyter')\n"
        "ip.run_line_magic('kaito', 'help')\n"
        "new = set(sys.modules) - before\n"
        "print(sorted(m for m in new if m.split('.')[0] not in sys.stdlib_module_names | {'IPython'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = eval(out.strip().splitlines()[-1])
    assert [m for m in loaded if m.split(".")[0] != "kaito_jupyter"] == []
    assert set(loaded) <= {
        "kaito_jupyter",
        "kaito_jupyter.magics",
        "kaito_jupyter.magics.args",
        "kaito_jupyter.magics.errors",
        "kaito_jupyter.errors",
    }
