"""Kaito's admission rules: the README workspaces pass; each invalid workspace gets its message."""

from __future__ import annotations

import pytest
import yaml

from kaito_jupyter import api
from kaito_jupyter.errors import ValidationError

from .samples import INFERENCE, TUNING, WORKSPACES, adapters, with_


@pytest.mark.parametrize(
    "name", ["inference-phi-3.yaml", "tuning-phi-3.yaml", "inference-phi-3-adapters.yaml"]
)
def test_readme_workspaces_validate(name):
    checked = api.check_file(WORKSPACES / name)
    assert len(checked) == 1
    ws = checked[0].workspace
    assert ws.resource.instance_type == "Standard_NC6s_v3"
    # Placeholders in Kaito's README are flagged, not rejected.
    for warning in checked[0].warnings:
        assert "placeholder" in warning.message


def test_readme_tuning_workspace_reads_as_written():
    (checked,) = api.check_file(WORKSPACES / "tuning-phi-3.yaml")
    ws = checked.workspace
    assert ws.tuning.method == "qlora"
    assert ws.tuning.input.urls[0].startswith(
        "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/"
    )
    assert ws.tuning.output.image_push_secret == "ACR_REGISTRY_SECRET_HERE"
    (adapter_ws,) = api.check_file(WORKSPACES / "inference-phi-3-adapters.yaml")
    assert adapter_ws.workspace.inference.adapters[0].strength_value == 1.0


@pytest.mark.parametrize("base", [INFERENCE, TUNING])
def test_bases_are_valid(base):
    assert api.check_dict(base).warnings == []


# (id, workspace, field path, message fragment)
INVALID = [
    (
        "name-uppercase",
        with_(INFERENCE, metadata__name="Phi3"),
        "metadata.name",
        "not a valid workspace name",
    ),
    (
        "name-underscore",
        with_(INFERENCE, metadata__name="phi_3"),
        "metadata.name",
        "lower case letters",
    ),
    (
        "name-too-long",
        with_(INFERENCE, metadata__name="a" * 64),
        "metadata.name",
        "at most 63 characters",
    ),
    ("name-missing", with_(INFERENCE, metadata=None), "metadata.name", "is required"),
    (
        "name-trailing-dash",
        with_(INFERENCE, metadata__name="phi-"),
        "metadata.name",
        "start and end",
    ),
    (
        "namespace-invalid",
        with_(INFERENCE, metadata__namespace="Team A"),
        "metadata.namespace",
        "not a valid namespace",
    ),
    ("neither", with_(INFERENCE, inference=None), "", "not neither"),
    ("both", {**INFERENCE, "tuning": TUNING["tuning"]}, "", "but not both"),
    (
        "preset-unknown",
        with_(INFERENCE, inference__preset__name="phi-9"),
        "inference.preset.name",
        "Unsupported inference preset name phi-9",
    ),
    (
        "preset-typo-suggests",
        with_(INFERENCE, inference__preset__name="phi-3-mini-4k-instrukt"),
        "inference.preset.name",
        "did you mean phi-3-mini-4k-instruct",
    ),
    (
        "preset-deprecated",
        with_(INFERENCE, inference__preset__name="phi-2"),
        "inference.preset.name",
        "Model phi-2 is deprecated and no longer supported",
    ),
    (
        "preset-and-template",
        with_(INFERENCE, inference__template={"spec": {"containers": []}}),
        "inference",
        "cannot be set at the same time",
    ),
    (
        "preset-nor-template",
        with_(INFERENCE, inference={"config": "x"}),
        "inference",
        "Preset or Template must be specified",
    ),
    (
        "instance-unknown",
        with_(INFERENCE, resource__instanceType="p3.2xlarge"),
        "resource.instanceType",
        "Unsupported instance type p3.2xlarge",
    ),
    (
        "instance-typo-suggests",
        with_(INFERENCE, resource__instanceType="Standrd_NC6s_v3"),
        "resource.instanceType",
        "did you mean Standard_NC6s_v3",
    ),
    (
        "instance-missing",
        with_(INFERENCE, resource__instanceType=None),
        "resource.instanceType",
        "is required",
    ),
    (
        "gpu-memory",
        with_(INFERENCE, inference__preset__name="phi-4"),
        "resource.instanceType",
        "Insufficient total GPU memory: Instance type Standard_NC6s_v3 has a total of 16Gi",
    ),
    (
        "gpu-memory-numbers",
        with_(INFERENCE, inference__preset__name="qwen2.5-coder-32b-instruct"),
        "resource.instanceType",
        "requires at least 70Gi for inference",
    ),
    (
        "gpu-memory-tuning-lora",
        with_(TUNING, tuning__preset__name="phi-3-medium-4k-instruct", tuning__method="lora"),
        "resource.instanceType",
        "requires at least 48Gi for lora",
    ),
    (
        "gpu-count",
        with_(
            INFERENCE,
            inference__preset__name="falcon-40b-instruct",
            resource__instanceType="Standard_NC96ads_A100_v4",
            resource__count=1,
        ),
        None,
        None,
    ),
    (
        "tuning-unsupported-preset",
        with_(TUNING, tuning__preset__name="llama-3.1-8b-instruct"),
        "tuning.preset.name",
        "Unsupported tuning preset name llama-3.1-8b-instruct",
    ),
    (
        "tuning-unknown-preset",
        with_(TUNING, tuning__preset__name="nope"),
        "tuning.preset.name",
        "Unsupported tuning preset name nope",
    ),
    ("tuning-preset-missing", with_(TUNING, tuning__preset=None), "tuning.preset", "is required"),
    (
        "tuning-multinode",
        with_(TUNING, resource__count=2),
        "resource.count",
        "Tuning does not currently support multinode",
    ),
    (
        "adapters-too-many",
        with_(INFERENCE, inference__adapters=adapters(11)),
        "inference.adapters",
        "maximum of 10 allowed",
    ),
    (
        "adapters-duplicate",
        with_(INFERENCE, inference__adapters=adapters(2, name=lambda i: "same")),
        "inference.adapters[1].source.name",
        "Duplicate adapter source name found: same",
    ),
    (
        "strength-above-one",
        with_(INFERENCE, inference__adapters=adapters(1, strength="1.5")),
        "inference.adapters[0].strength",
        "between 0 and 1",
    ),
    (
        "strength-negative",
        with_(INFERENCE, inference__adapters=adapters(1, strength="-0.1")),
        "inference.adapters[0].strength",
        "between 0 and 1",
    ),
    (
        "strength-not-a-number",
        with_(INFERENCE, inference__adapters=adapters(1, strength="strong")),
        "inference.adapters[0].strength",
        "must be a number between 0 and 1",
    ),
    (
        "strength-nan",
        with_(INFERENCE, inference__adapters=adapters(1, strength="nan")),
        "inference.adapters[0].strength",
        "between 0 and 1",
    ),
    (
        "strength-unquoted",
        with_(INFERENCE, inference__adapters=adapters(1, strength=1.0)),
        "inference.adapters[0].strength",
        'quote it: "1.0"',
    ),
    (
        "adapter-no-source",
        with_(INFERENCE, inference__adapters=[{"strength": "0.5"}]),
        "inference.adapters[0].source",
        "is required",
    ),
    (
        "adapter-no-name",
        with_(INFERENCE, inference__adapters=[{"source": {"image": "myacr.azurecr.io/a:1"}}]),
        "inference.adapters[0].source.name",
        "is required",
    ),
    (
        "adapter-urls",
        with_(
            INFERENCE,
            inference__adapters=[{"source": {"name": "a", "urls": ["https://example.com/a"]}}],
        ),
        "inference.adapters[0].source.urls",
        "URLs are not supported as adapter source",
    ),
    (
        "adapter-no-image",
        with_(INFERENCE, inference__adapters=[{"source": {"name": "a"}}]),
        "inference.adapters[0].source",
        "Either Image or Volume must be specified",
    ),
    (
        "adapter-bad-image",
        with_(INFERENCE, inference__adapters=[{"source": {"name": "a", "image": "not a ref"}}]),
        "inference.adapters[0].source.image",
        "not a valid image reference",
    ),
    (
        "input-none",
        with_(TUNING, tuning__input={"name": "data"}),
        "tuning.input",
        "Exactly one of URLs, Volume, or Image must be specified (none is set)",
    ),
    (
        "input-two",
        with_(TUNING, tuning__input__image="myacr.azurecr.io/data:1"),
        "tuning.input",
        "urls and image are set",
    ),
    ("input-missing", with_(TUNING, tuning__input=None), "tuning.input", "is required"),
    (
        "url-scheme",
        with_(TUNING, tuning__input__urls=["ftp://example.com/data.parquet"]),
        "tuning.input.urls[0]",
        "must use http or https, not ftp",
    ),
    (
        "url-localhost",
        with_(TUNING, tuning__input__urls=["http://localhost:8000/d.parquet"]),
        "tuning.input.urls[0]",
        "points at localhost",
    ),
    (
        "url-loopback-ip",
        with_(TUNING, tuning__input__urls=["http://127.0.0.1/d.parquet"]),
        "tuning.input.urls[0]",
        "points at this machine",
    ),
    (
        "url-loopback-integer",
        with_(TUNING, tuning__input__urls=["http://2130706433/d.parquet"]),
        "tuning.input.urls[0]",
        "points at this machine",
    ),
    (
        "url-private",
        with_(TUNING, tuning__input__urls=["https://10.0.0.5/d.parquet"]),
        "tuning.input.urls[0]",
        "private or reserved",
    ),
    (
        "url-private-192",
        with_(TUNING, tuning__input__urls=["https://192.168.1.1/d.parquet"]),
        "tuning.input.urls[0]",
        "private or reserved",
    ),
    (
        "url-link-local",
        with_(TUNING, tuning__input__urls=["http://169.254.169.254/metadata"]),
        "tuning.input.urls[0]",
        "link-local",
    ),
    (
        "url-metadata-name",
        with_(TUNING, tuning__input__urls=["http://metadata.google.internal/x"]),
        "tuning.input.urls[0]",
        "cloud metadata endpoint",
    ),
    (
        "url-ipv6-loopback",
        with_(TUNING, tuning__input__urls=["http://[::1]/x"]),
        "tuning.input.urls[0]",
        "points at this machine",
    ),
    (
        "url-ipv6-mapped",
        with_(TUNING, tuning__input__urls=["http://[::ffff:10.1.2.3]/x"]),
        "tuning.input.urls[0]",
        "private or reserved",
    ),
    (
        "url-credentials",
        with_(TUNING, tuning__input__urls=["https://user:pw@example.com/x"]),
        "tuning.input.urls[0]",
        "must not embed credentials",
    ),
    (
        "url-second-of-two",
        with_(TUNING, tuning__input__urls=["https://example.com/a", "http://localhost/b"]),
        "tuning.input.urls[1]",
        "localhost",
    ),
    (
        "output-none",
        with_(TUNING, tuning__output={"imagePushSecret": "s"}),
        "tuning.output",
        "Exactly one of Volume or Image must be specified",
    ),
    (
        "output-both",
        with_(TUNING, tuning__output__volumeSource={"emptyDir": {}}),
        "tuning.output",
        "both image and volumeSource",
    ),
    (
        "output-no-secret",
        with_(TUNING, tuning__output__imagePushSecret=None),
        "tuning.output.imagePushSecret",
        "Must specify imagePushSecret with destination image",
    ),
    ("output-missing", with_(TUNING, tuning__output=None), "tuning.output", "is required"),
    (
        "method-invalid",
        with_(TUNING, tuning__method="dora"),
        "tuning.method",
        "use one of lora, qlora",
    ),
    ("method-missing", with_(TUNING, tuning__method=None), "tuning.method", "is required"),
    (
        "selector-missing",
        with_(INFERENCE, resource__labelSelector=None),
        "resource.labelSelector",
        "is required",
    ),
    (
        "selector-empty",
        with_(INFERENCE, resource__labelSelector={}),
        "resource.labelSelector",
        "empty selector would match every node",
    ),
    (
        "selector-bad-operator",
        with_(
            INFERENCE,
            resource__labelSelector={
                "matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]
            },
        ),
        "resource.labelSelector.matchExpressions[0].operator",
        "not a selector operator",
    ),
    (
        "selector-in-without-values",
        with_(
            INFERENCE,
            resource__labelSelector={"matchExpressions": [{"key": "a", "operator": "In"}]},
        ),
        "resource.labelSelector.matchExpressions[0].values",
        "needs at least one value",
    ),
    (
        "selector-bad-label-value",
        with_(INFERENCE, resource__labelSelector={"matchLabels": {"apps": "phi 3"}}),
        "resource.labelSelector.matchLabels.apps",
        "label value 'phi 3' is invalid",
    ),
    ("count-zero", with_(INFERENCE, resource__count=0), "resource.count", "must be at least 1"),
    (
        "count-string",
        with_(INFERENCE, resource__count="2"),
        "resource.count",
        "write 2 without quotes",
    ),
    (
        "unknown-field-typo",
        with_(INFERENCE, resource__instanceTyp="Standard_NC6s_v3"),
        "resource.instanceTyp",
        "did you mean 'instanceType'",
    ),
    ("unknown-top-level-spec", with_(INFERENCE, spec={"resource": {}}), "spec", "is not a field"),
    ("kind-wrong", with_(INFERENCE, kind="Deployment"), "kind", "must be 'Workspace'"),
    (
        "api-version-wrong",
        with_(INFERENCE, apiVersion="kaito.sh/v1"),
        "apiVersion",
        "kaito.sh/v1alpha1, kaito.sh/v1beta1",
    ),
    (
        "access-mode-invalid",
        with_(INFERENCE, inference__preset__accessMode="secret"),
        "inference.preset.accessMode",
        "must be one of public, private",
    ),
    (
        "private-without-image",
        with_(INFERENCE, inference__preset__accessMode="private"),
        "inference.preset.presetOptions.image",
        "When AccessMode is private, an image must be provided",
    ),
    (
        "token-preset-no-secret",
        with_(
            INFERENCE,
            inference__preset__name="llama-3.1-8b-instruct",
            resource__instanceType="Standard_NC24ads_A100_v4",
        ),
        "inference.preset.presetOptions.modelAccessSecret",
        "requires authentication and needs a modelAccessSecret",
    ),
    (
        "public-preset-with-secret",
        with_(INFERENCE, inference__preset__presetOptions={"modelAccessSecret": "hf-token"}),
        "inference.preset.presetOptions.modelAccessSecret",
        "does not require a modelAccessSecret",
    ),
    (
        "config-not-a-name",
        with_(INFERENCE, inference__config="My Config"),
        "inference.config",
        "must name a ConfigMap",
    ),
    (
        "preferred-node-invalid",
        with_(INFERENCE, resource__preferredNodes=["Node_1"]),
        "resource.preferredNodes[0]",
        "not a valid node name",
    ),
    (
        "status-condition-status",
        with_(INFERENCE, status={"conditions": [{"type": "ResourceReady", "status": "Yes"}]}),
        "status.conditions[0].status",
        "must be one of",
    ),
]


@pytest.mark.parametrize(
    ("case", "workspace", "path", "fragment"), INVALID, ids=[c[0] for c in INVALID]
)
def test_invalid_workspace_is_rejected_with_its_message(case, workspace, path, fragment):
    if path is None:  # a case that must pass: keeps the table honest about near misses
        api.check_dict(workspace)
        return
    with pytest.raises(ValidationError) as info:
        api.check_dict(workspace)
    matching = [i for i in info.value.issues if i.path == path and fragment in i.message]
    assert matching, f"no issue at {path!r} containing {fragment!r}; got:\n{info.value}"


def test_there_are_at_least_40_invalid_cases():
    assert sum(1 for c in INVALID if c[2] is not None) >= 40


def test_every_error_is_reported_not_only_the_first():
    bad = with_(
        TUNING,
        metadata__name="Bad_Name",
        tuning__method="dora",
        tuning__output__imagePushSecret=None,
    )
    bad["tuning"]["input"]["urls"] = ["http://localhost/x"]
    with pytest.raises(ValidationError) as info:
        api.check_dict(bad)
    paths = {i.path for i in info.value.issues}
    assert {
        "metadata.name",
        "tuning.method",
        "tuning.output.imagePushSecret",
        "tuning.input.urls[0]",
    } <= paths


def test_unknown_azure_gpu_size_passes_with_a_warning():
    checked = api.check_dict(with_(INFERENCE, resource__instanceType="Standard_NC8ads_A10_v9"))
    assert [w.path for w in checked.warnings] == ["resource.instanceType"]
    assert "not in kaito-jupyter's SKU table" in checked.warnings[0].message


def test_gpu_memory_message_suggests_instance_types_that_fit():
    with pytest.raises(ValidationError) as info:
        api.check_dict(with_(INFERENCE, inference__preset__name="phi-4"))
    (issue,) = info.value.issues
    assert "instance types that fit:" in issue.message
    assert "Standard_NC6s_v3" not in issue.message.split("instance types that fit:")[1]


def test_adapters_at_the_limit_are_fine():
    api.check_dict(with_(INFERENCE, inference__adapters=adapters(10, strength="0.25")))


def test_method_is_case_insensitive_like_kaito():
    api.check_dict(with_(TUNING, tuning__method="QLoRA"))


def test_v1beta1_model_access_secret_for_gated_preset():
    ws = with_(
        INFERENCE, apiVersion="kaito.sh/v1beta1", inference__preset__name="llama-3.1-8b-instruct"
    )
    ws["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    ws["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    assert api.check_dict(ws).workspace.version == "v1beta1"


UPDATES = [
    (
        "toggle-to-tuning",
        INFERENCE,
        {**TUNING, "metadata": INFERENCE["metadata"], "resource": INFERENCE["resource"]},
        "inference",
        "cannot be toggled",
    ),
    (
        "preset",
        INFERENCE,
        with_(INFERENCE, inference__preset__name="phi-3-mini-128k-instruct"),
        "inference.preset",
        "field is immutable",
    ),
    (
        "method",
        TUNING,
        with_(TUNING, tuning__method="lora"),
        "tuning.method",
        "Method cannot be changed",
    ),
    (
        "instance-type",
        INFERENCE,
        with_(INFERENCE, resource__instanceType="Standard_NC12s_v3"),
        "resource.instanceType",
        "field is immutable",
    ),
    (
        "label-selector",
        INFERENCE,
        with_(INFERENCE, resource__labelSelector={"matchLabels": {"apps": "other"}}),
        "resource.labelSelector",
        "field is immutable",
    ),
    (
        "tuning-preset",
        TUNING,
        with_(TUNING, tuning__preset__name="phi-3-mini-4k-instruct"),
        "tuning.preset",
        "field is immutable",
    ),
]


@pytest.mark.parametrize(
    ("case", "old", "new", "path", "fragment"), UPDATES, ids=[u[0] for u in UPDATES]
)
def test_immutable_fields_on_update(case, old, new, path, fragment):
    old_ws = api.check_dict(old).workspace
    with pytest.raises(ValidationError) as info:
        api.check_dict(new, old=old_ws)
    assert any(i.path == path and fragment in i.message for i in info.value.issues), str(info.value)


def test_update_that_changes_only_adapters_is_allowed():
    old_ws = api.check_dict(INFERENCE).workspace
    api.check_dict(with_(INFERENCE, inference__adapters=adapters(2)), old=old_ws)


def test_yaml_errors_carry_line_and_column(tmp_path):
    text = yaml.safe_dump(
        with_(TUNING, tuning__input__urls=["https://example.com/ok", "http://10.0.0.1/x"]),
        sort_keys=False,
    )
    with pytest.raises(ValidationError) as info:
        api.check_text(text, "ws.yaml")
    (issue,) = info.value.issues
    assert issue.path == "tuning.input.urls[1]"
    line = text.splitlines()[issue.line - 1]
    assert "10.0.0.1" in line
    assert line[issue.column - 1 :].startswith(("http", "'http", '"http'))
    assert str(issue).startswith(
        f"ws.yaml:{issue.line}:{issue.column}: error: tuning.input.urls[1]:"
    )
