"""The cluster notebooks' cells, dry: every `%kaito` / `%%kaito` cell parses, and every cell that
creates something (apply, deploy, tune) is admitted with `--dry-run` by the magics against a
backend with the cluster's admission rules; Python cells run, so `{var}`s are real.

These notebooks need an AKS cluster (or the test bed) to run for real: tests/notebooks runs
them there. This test keeps every cell's verb and YAML right without one.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import nbformat
import pytest
from kaito_jupyter.magics import results as r
from kaito_jupyter.magics.args import parse

from .memory_backend import MemoryBackend
from .shell import kaito_shell

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CLUSTER_NOTEBOOKS = ("aks-inference.ipynb", "qlora-tuning.ipynb", "adapters.ipynb")
# Verbs that read state the dry run did not create: parsed, not run.
READ_ONLY = {"get", "describe", "status", "chat", "logs", "delete"}
MAGIC = re.compile(r"^(?:\w+\s*=\s*)?(%%?)kaito\b(.*)$")


@pytest.fixture
def ip(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    shell = kaito_shell()
    session = shell.magics_manager.registry["KaitoMagics"].session
    session.backend_override = MemoryBackend()
    yield shell
    session.backend_override = None


def _dry(line: str) -> str:
    line = re.sub(r"--timeout\s+\S+", "", line).replace("--wait", "")
    return line + " --dry-run"


@pytest.mark.parametrize("name", CLUSTER_NOTEBOOKS)
def test_every_cell_parses_and_admits(name, ip, capsys):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    created = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        first, _, body = cell.source.partition("\n")
        match = MAGIC.match(first)
        if match is None:
            assert not ip.run_cell(cell.source).error_in_exec, cell.source
            continue
        kind, line = match.groups()
        line = ip.var_expand(line.strip())
        verb = parse(shlex.split(line)).verb
        if verb in READ_ONLY:
            continue
        if verb in ("apply", "deploy", "tune"):
            line = _dry(line)
        if kind == "%%":
            result = ip.run_cell_magic("kaito", line, body)
        else:
            result = ip.run_line_magic("kaito", line)
        printed = capsys.readouterr()
        assert printed.err == "", f"{name}: {first}\n{printed.err}"
        assert result is not None, f"{name}: {first}"
        if isinstance(result, r.AppliedResult):
            assert result.dry_run
            created += result.names
    assert created, f"{name} creates no workspace"
