"""The `kaito` command: exit codes and what a user reads."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from kaito_jupyter import catalog, cli

from .output import columns, line_with
from .samples import INFERENCE, WORKSPACES, with_


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_validate_accepts_the_readme_workspaces(capsys):
    code, out, _ = run(capsys, "validate", "-f", str(WORKSPACES))
    assert code == 0
    for name in ("workspace-phi-3-mini", "workspace-tuning-phi-3", "workspace-phi-3-mini-adapter"):
        assert f"workspace.kaito.sh/{name} valid" in out


def test_validate_rejects_with_messages(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(with_(INFERENCE, inference__preset__name="phi-4", metadata__name="Bad"))
    )
    code, _, err = run(capsys, "validate", "-f", str(bad))
    assert code == 1
    assert err.splitlines()[0] == f"{bad}: invalid"
    line_with(err, "error: metadata.name: 'Bad'", "must consist of lower case")
    line_with(err, "error: resource.instanceType: Insufficient total GPU memory", "phi-4")


def test_validate_json_output(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(with_(INFERENCE, metadata__name="Bad")))
    code, out, _ = run(
        capsys,
        "validate",
        "-o",
        "json",
        "-f",
        str(bad),
        "-f",
        str(WORKSPACES / "inference-phi-3.yaml"),
    )
    report = json.loads(out)
    assert code == 1 and [r["valid"] for r in report] == [False, True]


def test_validate_update_with_old(capsys, tmp_path):
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(yaml.safe_dump(INFERENCE))
    new.write_text(yaml.safe_dump(with_(INFERENCE, resource__instanceType="Standard_NC12s_v3")))
    code, _, err = run(capsys, "validate", "-f", str(new), "--old", str(old))
    assert code == 1
    line_with(err, "error: resource.instanceType:", "field is immutable")


def test_missing_file(capsys):
    code, _, err = run(capsys, "validate", "-f", "/nonexistent.yaml")
    assert code == 1 and err.strip() == "error: /nonexistent.yaml: no such file"


def test_presets_and_skus_tables(capsys):
    code, out, _ = run(capsys, "presets")
    assert code == 0 and columns(out, "llama-3.1-8b-instruct")  # listed without --tuning
    code, out, _ = run(capsys, "presets", "--tuning")
    assert code == 0 and columns(out, "phi-3-mini-128k-instruct")
    assert "llama-3.1-8b-instruct" not in out
    code, out, _ = run(capsys, "skus")
    assert code == 0 and columns(out, "g5.xlarge")  # an AWS size, listed without --cloud
    code, out, _ = run(capsys, "skus", "--cloud", "azure")
    assert code == 0 and columns(out, "Standard_NC6s_v3") and "g5.xlarge" not in out


def test_explain_shows_fit_and_dtype(capsys):
    code, out, _ = run(
        capsys, "explain", "phi-3-mini-128k-instruct", "--instance-type", "Standard_NC6s_v3"
    )
    assert code == 0
    line_with(out, "dtype:", "no bf16 on NVIDIA V100 (compute 7.0 < 8.0)")
    # Each use's row: its dtype (the one the runtime picks: catalog.compute_dtype) and verdict.
    assert columns(out, "inference")[-2:] == ["float16", "fits"]
    assert columns(out, "qlora")[-2:] == ["float32", "fits"]
    code, out, _ = run(capsys, "explain", "phi-4", "-i", "Standard_NC6s_v3")
    assert columns(out, "inference")[-4:] == ["float16", "does", "NOT", "fit"]
    tried = line_with(out, "for inference, try:").split("try: ")[1].split(", ")
    phi4 = catalog.preset("phi-4")
    assert tried and all(catalog.fit(phi4, catalog.find_sku(n), 1).fits for n in tried)


def test_explain_unknown_instance_type(capsys):
    code, _, err = run(capsys, "explain", "phi-4", "-i", "Standard_NC6s_v9")
    assert code == 1
    assert "unknown instance type 'Standard_NC6s_v9'" in line_with(err, "error:")
    assert "Standard_NC6s_v3" in line_with(err, "hint: did you mean")


def test_console_script_imports_no_torch():
    code = "import sys, kaito_jupyter.cli as c; c.main(['presets']); print('torch:', 'torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[0].startswith("PRESET")  # the command ran
    assert out.splitlines()[-1] == "torch: False"


def test_validate_reads_the_allowed_private_registries(capsys, tmp_path, monkeypatch):
    local = tmp_path / "local-registry.yaml"
    adapter = {"source": {"name": "a", "image": "127.0.0.1:5000/adapters/a:1"}}
    local.write_text(yaml.safe_dump(with_(INFERENCE, inference__adapters=[adapter])))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "jupyter"))
    monkeypatch.delenv("KAITO_ALLOWED_PRIVATE_REGISTRIES", raising=False)
    code, _, err = run(capsys, "validate", "-f", str(local))
    assert code == 1
    line_with(err, "inference.adapters[0].source.image: registry 127.0.0.1:5000 points at this")
    monkeypatch.setenv("KAITO_ALLOWED_PRIVATE_REGISTRIES", "127.0.0.1:5000")
    code, out, _ = run(capsys, "validate", "-f", str(local))
    assert code == 0 and line_with(out, "workspace-phi-3-mini valid")
