"""The API semantics the reconciler relies on, checked against the bed's real kube-apiserver:
server-side apply with field managers, the status subresource of a CRD, CRD validation,
optimistic concurrency, garbage collection through owner references, and watches."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

APPLY = "application/apply-patch+yaml"
GROUP = "testbed.kaito-jupyter.io"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _apply_config_map(core, name: str, data: dict, manager: str, force: bool = False):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    return core.patch_namespaced_config_map(
        name, "default", body, field_manager=manager, force=force, _content_type=APPLY
    )


def test_server_side_apply_tracks_field_managers_and_reports_conflicts(testbed):
    core = testbed.core()
    name = _name("ssa")
    applied = _apply_config_map(core, name, {"preset": "phi-3"}, "kaito-jupyter")
    managers = {m.manager: m.operation for m in applied.metadata.managed_fields}
    assert managers == {"kaito-jupyter": "Apply"}

    with pytest.raises(ApiException) as conflict:
        _apply_config_map(core, name, {"preset": "falcon"}, "someone-else")
    assert conflict.value.status == 409
    assert "conflict" in conflict.value.body.lower()

    forced = _apply_config_map(core, name, {"preset": "falcon"}, "someone-else", force=True)
    assert forced.data == {"preset": "falcon"}
    assert {m.manager for m in forced.metadata.managed_fields} == {"someone-else"}


def test_stale_resource_version_is_a_conflict(testbed):
    core = testbed.core()
    name = _name("rv")
    created = core.create_namespaced_config_map(
        "default", {"metadata": {"name": name}, "data": {"n": "1"}}
    )
    current = core.read_namespaced_config_map(name, "default")
    current.data = {"n": "2"}
    core.replace_namespaced_config_map(name, "default", current)
    created.data = {"n": "3"}  # still carries the first resourceVersion
    with pytest.raises(ApiException) as stale:
        core.replace_namespaced_config_map(name, "default", created)
    assert stale.value.status == 409
    assert "the object has been modified" in stale.value.body


@pytest.fixture(scope="module")
def widget_crd(testbed):
    """A namespaced CRD with a status subresource and a validated spec."""
    extensions = client.ApiextensionsV1Api(testbed.api_client)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    extensions.create_custom_resource_definition(crd)
    custom = client.CustomObjectsApi(testbed.api_client)

    def served():
        try:
            custom.list_namespaced_custom_object(GROUP, "v1", "default", "widgets")
            return True
        except ApiException:
            return False

    deadline = time.monotonic() + 30
    while not served():
        assert time.monotonic() < deadline, "the Widget CRD was never served"
        time.sleep(0.2)
    return custom


def test_status_subresource_separates_spec_and_status(widget_crd):
    custom = widget_crd
    name = _name("widget")
    body = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": 1},
        "status": {"phase": "ignored-on-create"},
    }
    created = custom.create_namespaced_custom_object(GROUP, "v1", "default", "widgets", body)
    assert "status" not in created

    patched = custom.patch_namespaced_custom_object_status(
        GROUP, "v1", "default", "widgets", name, {"status": {"phase": "Ready"}}
    )
    assert patched["status"] == {"phase": "Ready"}
    assert patched["metadata"]["generation"] == 1  # status writes leave generation alone

    spec_write = custom.patch_namespaced_custom_object(
        GROUP, "v1", "default", "widgets", name, {"spec": {"size": 2}, "status": {"phase": "X"}}
    )
    assert spec_write["metadata"]["generation"] == 2
    assert spec_write["status"] == {"phase": "Ready"}  # the main resource ignores status


def test_crd_validation_rejects_an_invalid_spec(widget_crd):
    body = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": _name("bad")},
        "spec": {"size": 0},
    }
    with pytest.raises(ApiException) as invalid:
        widget_crd.create_namespaced_custom_object(GROUP, "v1", "default", "widgets", body)
    assert invalid.value.status == 422
    assert "spec.size" in invalid.value.body


def test_garbage_collector_deletes_dependents_of_a_deleted_owner(testbed):
    core = testbed.core()
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": _name("owner")}})
    dependent_name = _name("dependent")
    core.create_namespaced_config_map(
        "default",
        {
            "metadata": {
                "name": dependent_name,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": owner.metadata.name,
                        "uid": owner.metadata.uid,
                    }
                ],
            }
        },
    )
    core.delete_namespaced_config_map(owner.metadata.name, "default")
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_config_map(dependent_name, "default")
        except ApiException as exc:
            assert exc.status == 404
            break
        assert time.monotonic() < deadline, "the garbage collector left the dependent behind"
        time.sleep(0.3)


def test_a_watch_streams_changes(testbed):
    core = client.CoreV1Api(testbed.new_api_client())
    name = _name("watched")
    listed = core.list_namespaced_config_map("default")
    seen: list[tuple[str, str]] = []
    stream = watch.Watch()

    def follow():
        for event in stream.stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=20,
        ):
            if event["object"].metadata.name == name:
                seen.append((event["type"], (event["object"].data or {}).get("v", "")))
                if event["type"] == "DELETED":
                    stream.stop()

    follower = threading.Thread(target=follow)
    follower.start()
    writer = testbed.core()
    writer.create_namespaced_config_map("default", {"metadata": {"name": name}, "data": {"v": "1"}})
    writer.patch_namespaced_config_map(name, "default", {"data": {"v": "2"}})
    writer.delete_namespaced_config_map(name, "default")
    follower.join(25)
    assert seen == [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")]
