"""YAML and dict parsing: positions, multi-document streams, round trips, shape errors."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kaito_jupyter import api
from kaito_jupyter.api.parse import format_path, parse_path
from kaito_jupyter.errors import ValidationError

from .samples import INFERENCE, TUNING, WORKSPACES, with_


def test_multi_document_stream():
    text = "\n---\n".join(yaml.safe_dump(d) for d in (INFERENCE, TUNING)) + "\n---\n"
    checked = api.check_text(text, "two.yaml")
    assert [c.workspace.mode for c in checked] == ["inference", "tuning"]
    assert [c.document.index for c in checked] == [0, 1]


def test_errors_of_every_document_are_collected():
    bad1 = with_(INFERENCE, metadata__name="A")
    bad2 = with_(TUNING, tuning__method="x")
    text = yaml.safe_dump(bad1) + "---\n" + yaml.safe_dump(bad2)
    with pytest.raises(ValidationError) as info:
        api.check_text(text)
    assert {i.path for i in info.value.issues} == {"metadata.name", "tuning.method"}


@pytest.mark.parametrize(
    "name", ["inference-phi-3.yaml", "tuning-phi-3.yaml", "inference-phi-3-adapters.yaml"]
)
def test_round_trip_to_and_from_dicts(name):
    data = yaml.safe_load((WORKSPACES / name).read_text())
    ws = api.Workspace.from_dict(data)
    assert ws.to_dict() == data
    assert api.Workspace.from_dict(ws.to_dict()) == ws


def test_round_trip_keeps_status_metadata_and_schemaless_parts():
    data = with_(
        TUNING, tuning__output={"volumeSource": {"persistentVolumeClaim": {"claimName": "out"}}}
    )
    data["metadata"].update(
        {
            "namespace": "ml",
            "uid": "1234",
            "managedFields": [{"manager": "kubectl"}],
            "labels": {"a": "b"},
        }
    )
    data["status"] = {
        "conditions": [
            {
                "type": "ResourceReady",
                "status": "True",
                "reason": "Ok",
                "message": "",
                "lastTransitionTime": "2026-11-23T10:00:00Z",
            }
        ],
        "workerNodes": ["aks-ws-1"],
        "performance": {"metrics": {}},
    }
    assert api.Workspace.from_dict(data).to_dict() == data


def test_duplicate_keys_are_an_error_with_position():
    text = "apiVersion: kaito.sh/v1alpha1\nkind: Workspace\nmetadata:\n  name: a\n  name: b\n"
    with pytest.raises(ValidationError) as info:
        api.check_text(text, "dup.yaml")
    (issue,) = info.value.issues
    assert (issue.path, issue.line, issue.column) == ("metadata.name", 5, 3)
    assert "duplicate key" in issue.message


def test_yaml_syntax_error_has_position():
    with pytest.raises(ValidationError) as info:
        api.check_text("apiVersion: kaito.sh/v1alpha1\nkind: [Workspace\n", "broken.yaml")
    (issue,) = info.value.issues
    assert issue.message.startswith("invalid YAML")
    assert issue.line is not None and issue.source == "broken.yaml"


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['true']\n",  # a tagged sequence, the whole document
        "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: !!python/object:os.Popen {a: 1}\n",
        "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: !!python/name:os.system x}\n",
        "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: !!set {name: x}\n",
    ],
)
def test_tags_other_than_yamls_own_are_refused(text):
    """Refused by the constructor, not because the tagged node is the wrong shape: a tagged
    mapping or list must not be read as a plain one."""
    with pytest.raises(ValidationError) as info:
        api.check_text(text, "tagged.yaml")
    (issue,) = info.value.issues
    assert issue.message.startswith("invalid YAML: could not determine a constructor for the tag")
    assert issue.line is not None and issue.source == "tagged.yaml"


def test_empty_input():
    with pytest.raises(ValidationError, match="no Workspace found"):
        api.check_text("\n# nothing\n")


def test_document_must_be_a_mapping():
    with pytest.raises(ValidationError, match="must be a YAML mapping"):
        api.check_text("- just\n- a list\n")


def test_merge_keys_are_resolved():
    text = """
base: &r
  instanceType: Standard_NC6s_v3
"""
    # A stray top-level key is reported, merge keys inside resource work.
    doc = yaml.safe_dump(INFERENCE)
    merged = doc.replace("resource:\n", "resource:\n  <<: {count: 1}\n")
    assert api.check_text(merged)[0].workspace.resource.count == 1
    with pytest.raises(ValidationError, match="base"):
        api.check_text(text + doc)


@pytest.mark.parametrize("path", ["tuning.input.urls[0]", "metadata.name", "a[1][2].b", ""])
def test_path_format_round_trip(path):
    assert format_path(parse_path(path)) == path


# ------------------------------------------------------------------------- property tests

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)
)
keys = st.one_of(
    st.sampled_from(
        [
            "apiVersion",
            "kind",
            "metadata",
            "name",
            "resource",
            "instanceType",
            "count",
            "labelSelector",
            "matchLabels",
            "inference",
            "tuning",
            "preset",
            "adapters",
            "source",
            "strength",
            "image",
            "urls",
            "input",
            "output",
            "method",
            "status",
            "conditions",
            "volumeSource",
            "template",
        ]
    ),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)


def _workspace_like():
    return st.fixed_dictionaries(
        {
            "apiVersion": st.sampled_from(["kaito.sh/v1alpha1", "kaito.sh/v1beta1", "v1"]),
            "kind": st.sampled_from(["Workspace", "Pod"]),
        },
        optional={
            "metadata": values,
            "resource": values,
            "inference": values,
            "tuning": values,
            "status": values,
        },
    )


@given(st.one_of(values, _workspace_like()))
def test_arbitrary_dicts_raise_only_validation_error(data):
    try:
        api.check_dict(data)
    except ValidationError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert isinstance(issue.path, str) and issue.message


@given(
    st.one_of(
        st.text(max_size=200),
        values.map(lambda v: yaml.safe_dump(v)),
        _workspace_like().map(yaml.safe_dump),
    )
)
def test_arbitrary_yaml_raises_only_validation_error(text):
    try:
        api.check_text(text, "fuzz.yaml")
    except ValidationError as exc:
        assert exc.issues


@given(
    name=st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True),
    strength=st.floats(min_value=0, max_value=1),
    count=st.integers(min_value=1, max_value=10),
)
def test_valid_workspaces_round_trip(name, strength, count):
    data = with_(INFERENCE, metadata__name=name, resource__count=count)
    data["inference"]["adapters"] = [
        {"source": {"name": "a", "image": "r.io/a:1"}, "strength": str(strength)}
    ]
    ws = api.check_dict(data).workspace
    assert ws.to_dict() == data


def test_shape_and_rule_problems_are_reported_in_one_pass():
    data = with_(INFERENCE, resource__instanceTyp="Standard_NC6s_v3", resource__count="2")
    data["inference"]["adapters"] = [
        {"source": {"name": "a", "image": "r.io/a:1"}, "strength": "1.5"}
    ]
    with pytest.raises(ValidationError) as info:
        api.check_dict(data)
    messages = {i.path: i.message for i in info.value.issues}
    assert "did you mean 'instanceType'" in messages["resource.instanceTyp"]
    assert "without quotes" in messages["resource.count"]
    assert "between 0 and 1" in messages["inference.adapters[0].strength"]
