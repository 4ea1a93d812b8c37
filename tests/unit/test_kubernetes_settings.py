"""The kubernetes section of the shared settings, `kaito install --print`, and the
provisioner choice."""

from __future__ import annotations

import pytest
import yaml

from kaito_jupyter import cli, config
from kaito_jupyter.errors import KaitoError
from kaito_jupyter.provisioners import select
from kaito_jupyter.provisioners.base import NodeRequest
from kaito_jupyter.provisioners.byo import ByoProvisioner


def test_kubernetes_section_from_the_file_and_the_environment(tmp_path):
    path = tmp_path / "kaito.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "backend": "kubernetes",
                "kubernetes": {"kaito_runtime": "transformers", "install_crd": "false"},
            }
        )
    )
    s = config.load(
        path, environ={"KAITO_RUNTIME_IMAGE": "reg.example/rt:2", "KAITO_LEASE_NAMESPACE": "ml"}
    )
    assert (s.kubernetes.kaito_runtime, s.kubernetes.install_crd) == ("transformers", False)
    assert (s.kubernetes.runtime_image, s.kubernetes.lease_namespace) == ("reg.example/rt:2", "ml")
    assert (
        config.load(tmp_path / "absent.yaml", environ={}).kubernetes.lease_namespace
        == "kube-system"
    )


def test_an_unknown_kubernetes_setting_names_the_known_ones(tmp_path):
    path = tmp_path / "kaito.yaml"
    path.write_text(yaml.safe_dump({"kubernetes": {"runtime": "x"}}))
    with pytest.raises(KaitoError, match=r"kubernetes\.runtime") as caught:
        config.load(path, environ={})
    assert "runtime_image" in caught.value.hint


def test_install_print_writes_the_crd_and_both_rbac_manifests(capsys):
    assert cli.main(["install", "--print"]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "CustomResourceDefinition"
    assert kinds.count("ClusterRole") == 3 and "ClusterRoleBinding" in kinds


def _node(name, labels, ready=True, unschedulable=False):
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"unschedulable": unschedulable},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_byo_takes_ready_matching_nodes_preferred_first_and_says_why_when_short():
    nodes = [
        _node("b", {"apps": "x", "node.kubernetes.io/instance-type": "Standard_NC6s_v3"}),
        _node("a", {"apps": "x", "node.kubernetes.io/instance-type": "Standard_NC6s_v3"}),
        _node(
            "c", {"apps": "x", "node.kubernetes.io/instance-type": "Standard_NC6s_v3"}, ready=False
        ),
        _node(
            "d",
            {"apps": "x", "node.kubernetes.io/instance-type": "Standard_NC6s_v3"},
            unschedulable=True,
        ),
        _node("e", {"apps": "x", "node.kubernetes.io/instance-type": "Standard_NC12s_v3"}),
    ]
    byo = select(config.Settings(), None, list_nodes=lambda: nodes)
    assert isinstance(byo, ByoProvisioner)
    request = NodeRequest(
        "ns", "ws", "u", "Standard_NC6s_v3", 2, labels={"apps": "x"}, preferred_nodes=("b",)
    )
    assert byo.ensure(request).ready == ("b", "a")
    short = byo.ensure(NodeRequest("ns", "ws", "u", "Standard_NC6s_v3", 3, labels={"apps": "x"}))
    assert not short.satisfied and short.reason == "NoMatchingNodes"
    assert "2 of 3" in short.message and "apps=x" in short.message
    assert byo.release(request) is True and byo.collect(set()) == []
