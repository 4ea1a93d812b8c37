"""The pure parts of the aks provisioner: pool names and specs, ARM error mapping, pacing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kaito_jupyter.provisioners import agent_pools, arm_errors
from kaito_jupyter.provisioners.base import NodeRequest
from kaito_jupyter.provisioners.lro import next_delay
from kaito_jupyter.provisioners.pacing import Pacer

# The compute resource provider's quota message, as AKS relays it.
QUOTA_MESSAGE = (
    "Preflight validation check for resource(s) for container service c1 in resource group "
    "MC_rg_c1_westeurope failed. Message: Operation could not be completed as it results in "
    "exceeding approved standardNCADSA100v4Family Cores quota. Additional details - "
    "Deployment Model: Resource Manager, Location: westeurope, Current Limit: 24, Current "
    "Usage: 24, Additional Required: 24, (Minimum) New Limit Required: 48. Submit a request "
    "for Quota increase by specifying parameters listed in the 'Details' section."
)


def _request(**overrides) -> NodeRequest:
    values = dict(
        namespace="default",
        name="workspace-phi-3-mini",
        uid="u-1",
        instance_type="Standard_NC6s_v3",
        count=2,
        labels={"apps": "phi-3"},
        os_disk_gib=100,
    )
    values.update(overrides)
    return NodeRequest(**values)


# -- names ---------------------------------------------------------------------------------


def test_pool_names_are_valid_for_aks_stable_and_distinct():
    names = {agent_pools.pool_name("ns", f"workspace-{i}") for i in range(2000)}
    assert len(names) == 2000
    for name in names:
        assert agent_pools.NAME_RULE.match(name), name
        assert len(name) == 12
    assert agent_pools.pool_name("a", "b") == agent_pools.pool_name("a", "b")
    assert agent_pools.pool_name("a", "b") != agent_pools.pool_name("b", "a")
    # namespace/name is hashed with a separator: "a-b"/"c" is not "a"/"b-c".
    assert agent_pools.pool_name("a-b", "c") != agent_pools.pool_name("a", "b-c")


# -- spec ----------------------------------------------------------------------------------


def test_render_carries_size_count_labels_taint_disk_and_owner():
    created = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)
    spec = agent_pools.render(_request(), created)
    assert spec.name == agent_pools.pool_name("default", "workspace-phi-3-mini")
    assert (spec.vm_size, spec.count, spec.mode, spec.os_disk_size_gb) == (
        "Standard_NC6s_v3",
        2,
        "User",
        100,
    )
    assert spec.node_labels == {
        "apps": "phi-3",
        "kaito.sh/workspace": "workspace-phi-3-mini",
        "kaito.sh/workspacenamespace": "default",
    }
    assert spec.node_taints == ("sku=gpu:NoSchedule",)
    assert spec.tags == {
        "kaito-managed-by": "kaito-jupyter",
        "kaito-workspace": "workspace-phi-3-mini",
        "kaito-workspace-namespace": "default",
        "kaito-workspace-uid": "u-1",
        "kaito-created": "2026-12-03T14:00:00Z",
    }
    assert all("/" not in key for key in spec.tags)  # Azure refuses / in tag names
    kwargs = spec.sdk_kwargs()
    assert kwargs["node_taints"] == ["sku=gpu:NoSchedule"] and kwargs["os_type"] == "Linux"
    assert agent_pools.owner(spec.tags) == ("default", "workspace-phi-3-mini")
    assert agent_pools.created_at(spec.tags) == created


def test_reserved_and_system_labels_are_not_copied_to_the_pool():
    labels = {
        "apps": "x",
        "kaito.sh/workspace": "someone-else",
        "kubernetes.azure.com/agentpool": "p",
        "node.kubernetes.io/instance-type": "Standard_NC6s_v3",
        "example.com/team": "ml",
    }
    got = agent_pools.node_labels(_request(labels=labels))
    assert got == {
        "apps": "x",
        "example.com/team": "ml",
        "kaito.sh/workspace": "workspace-phi-3-mini",
        "kaito.sh/workspacenamespace": "default",
    }


def test_os_disk_defaults_and_bounds():
    assert agent_pools.os_disk_gib(_request(os_disk_gib=None)) == 128
    assert agent_pools.os_disk_gib(_request(os_disk_gib=10)) == 30
    assert agent_pools.os_disk_gib(_request(os_disk_gib=5000)) == 2048


def test_a_request_without_instance_type_or_count_names_the_field():
    with pytest.raises(ValueError, match=r"resource\.instanceType"):
        agent_pools.render(_request(instance_type=None))
    with pytest.raises(ValueError, match=r"resource\.count"):
        agent_pools.render(_request(count=0))


def test_owner_needs_our_tag():
    assert agent_pools.owner({"kaito-workspace": "w", "kaito-workspace-namespace": "n"}) is None
    assert agent_pools.owner(None) is None


def test_durations_read_like_a_clock():
    assert [agent_pools.duration(s) for s in (0, 45, 192, 3725)] == ["0s", "45s", "3m12s", "1h02m"]
    # The condition message's time moves in widening steps (each change is a status write).
    shown = [agent_pools.progress(1, 2, s) for s in (0, 14.9, 15, 59, 61, 192, 599, 601, 3725)]
    assert shown == [f"1/2 nodes ready, {t}" for t in
                     ("0s", "0s", "15s", "45s", "1m00s", "3m00s", "9m00s", "10m00s", "1h00m")]  # fmt: skip
    changes = {agent_pools.progress(0, 1, s) for s in range(0, 300, 5)}
    assert len(changes) == 8  # a 5-minute pool looked at every 5 s: 8 messages, not 60


# -- ARM errors ----------------------------------------------------------------------------


def test_quota_message_names_family_region_numbers_and_how_to_ask():
    quota = arm_errors.parse_quota(QUOTA_MESSAGE)
    assert quota == arm_errors.Quota(
        family="standardNCADSA100v4Family",
        location="westeurope",
        limit=24,
        usage=24,
        required=24,
        new_limit=48,
    )
    failure = arm_errors.classify(
        400, "QuotaExceeded", QUOTA_MESSAGE, pool="kw1", vm_size="Standard_NC24ads_A100_v4", count=1
    )
    assert failure.reason == "QuotaExceeded" and failure.permanent
    assert failure.message.startswith(
        "agent pool kw1 (1 x Standard_NC24ads_A100_v4) exceeds the standardNCADSA100v4Family "
        "vCPU quota in westeurope (needs 24 more vCPUs, the limit is 24, 24 are in use). "
        "Request at least 48 vCPUs of standardNCADSA100v4Family in westeurope"
    )
    assert arm_errors.QUOTA_HELP in failure.message
    assert "az vm list-usage -o table --location westeurope" in failure.message


def test_quota_without_numbers_still_says_what_to_do():
    failure = arm_errors.classify(400, "QuotaExceeded", "quota exceeded", vm_size="Standard_X")
    assert failure.reason == "QuotaExceeded"
    assert "Request more vCPU quota" in failure.message


def test_unavailable_sizes():
    message = (
        "The VM size of AgentPoolProfile:kw1 is not allowed in your subscription in location "
        "'eastus'. For more details, please visit https://aka.ms/aks/quotas-skus-regions"
    )
    failure = arm_errors.classify(400, "BadRequest", message, vm_size="Standard_ND96isr_H100_v5")
    assert failure.reason == "InstanceTypeUnavailable" and failure.permanent
    assert "not available to this subscription in eastus" in failure.message
    assert "--location eastus" in failure.message
    sku = arm_errors.classify(400, "SkuNotAvailable", "The requested size is not available.")
    assert sku.reason == "InstanceTypeUnavailable"


@pytest.mark.parametrize(
    ("status", "code", "reason", "permanent"),
    [
        (429, "TooManyRequests", "ArmThrottled", False),
        (500, "InternalServerError", "ArmUnavailable", False),
        (503, "ServiceUnavailable", "ArmUnavailable", False),
        (403, "AuthorizationFailed", "AzureAuthorizationFailed", True),
        (404, "ResourceNotFound", "AksClusterNotFound", True),
        (400, "InvalidParameter", "AgentPoolRejected", True),
    ],
)
def test_status_codes_map_to_reasons(status, code, reason, permanent):
    failure = arm_errors.classify(status, code, "something", retry_after=3)
    assert (failure.reason, failure.permanent) == (reason, permanent)


def test_in_progress_conflicts_are_waited_out():
    message = "Operation is not allowed because there's an in progress create operation."
    failure = arm_errors.classify(409, "OperationNotAllowed", message)
    assert failure.reason == "Provisioning" and not failure.permanent


def test_retry_after_header():
    assert arm_errors.retry_after_seconds("7") == 7.0
    assert arm_errors.retry_after_seconds("0") is None
    assert arm_errors.retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT") is None
    assert arm_errors.retry_after_seconds(None) is None


def test_exceptions_from_azure_core():
    from azure.core.exceptions import ServiceRequestError

    failure = arm_errors.from_exception(ServiceRequestError("connection refused"), pool="kw1")
    assert failure.reason == "ArmUnreachable" and not failure.permanent
    assert "KAITO_ARM_ENDPOINT" in failure.message
    with pytest.raises(KeyError):
        arm_errors.from_exception(KeyError("a bug is not an ARM error"))


# -- pacing --------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_calls_per_workspace_per_minute_are_bounded():
    clock = Clock()
    pacer = Pacer(calls_per_minute=3, clock=clock, jitter=lambda: 1.0)
    for _ in range(3):
        assert pacer.wait("a") == 0
        pacer.spend("a")
        clock.now += 1
    assert pacer.wait("a") == pytest.approx(57)  # the first call leaves the window at 1060
    assert pacer.wait("b") == 0  # another workspace has its own budget
    clock.now += 57
    assert pacer.wait("a") == 0


def test_retry_after_holds_every_key():
    clock = Clock()
    pacer = Pacer(clock=clock)
    assert pacer.throttled(5.0, "a") == 5.0
    assert pacer.wait("a") == pytest.approx(5) and pacer.wait("b") == pytest.approx(5)
    clock.now += 5
    assert pacer.wait("b") == 0


def test_backoff_doubles_with_jitter_up_to_a_cap_and_resets():
    clock = Clock()
    draws = iter([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    pacer = Pacer(base_delay=2, max_delay=10, clock=clock, jitter=lambda: next(draws))
    assert [pacer.failed("a") for _ in range(3)] == [2, 4, 8]
    assert pacer.failed("a") == 5  # 10 capped, times the lowest jitter (50%)
    assert pacer.failed("a") == 10
    assert pacer.failed("a", at_least=30) == 30  # a server's Retry-After wins
    assert pacer.wait("a") == pytest.approx(30)
    pacer.succeeded("a")
    assert pacer.attempts("a") == 0
    assert pacer.failed("a") == 2


def test_a_permanent_failure_holds_its_key_only():
    clock = Clock()
    pacer = Pacer(clock=clock)
    pacer.hold("a", 300)
    assert pacer.wait("a") == 300 and pacer.wait("b") == 0
    pacer.forget("a")
    assert pacer.wait("a") == 0
    pacer.hold("a", 300)
    pacer.throttled(5.0)
    pacer.unhold("a")
    assert pacer.wait("a") == 5  # the key's hold is gone, ARM's Retry-After is not


# -- auto selection ------------------------------------------------------------------------


def _settings(tmp_path, **environ):
    from kaito_jupyter import config

    return config.load(path=tmp_path / "kaito.yaml", environ=environ)


def _node(group: str | None) -> dict:
    labels = {"kubernetes.azure.com/cluster": group} if group else {}
    return {"metadata": {"name": "n", "labels": labels}}


def test_auto_without_coordinates_or_nodeclaims_is_byo(tmp_path):
    from kaito_jupyter.provisioners import selection

    assert selection.choose(_settings(tmp_path), None) == "byo"
    explicit = _settings(tmp_path, KAITO_PROVISIONER="nodeclaim")
    assert selection.choose(explicit, None) == "nodeclaim"


def test_auto_is_aks_only_on_the_configured_cluster(tmp_path):
    from kaito_jupyter.provisioners import selection

    settings = _settings(
        tmp_path, AZURE_SUBSCRIPTION_ID="s", KAITO_AKS_RESOURCE_GROUP="rg", KAITO_AKS_CLUSTER="c1"
    )
    assert selection.choose(settings, None, lambda: [_node("MC_rg_c1_eastus")]) == "aks"
    assert selection.choose(settings, None, lambda: [_node("mc_RG_c1_westeurope")]) == "aks"
    assert selection.choose(settings, None, lambda: [_node("MC_rg_c2_eastus")]) == "byo"
    assert selection.choose(settings, None, lambda: [_node(None)]) == "byo"  # not AKS at all
    assert selection.choose(settings, None, lambda: []) == "aks"  # nothing to contradict it


def test_a_namespaced_controller_counts_other_namespaces_as_live():
    from kaito_jupyter.provisioners.collector import LiveSet

    live = LiveSet({("team-a", "phi")}, lambda namespace: namespace == "team-a")
    assert ("team-a", "phi") in live
    assert ("team-a", "gone") not in live
    assert ("team-b", "anything") in live  # not ours to judge
    assert "team-a/phi" not in live


def test_auto_decides_on_first_use_and_retries_a_failed_discovery(tmp_path):
    from kaito_jupyter.provisioners import select
    from kaito_jupyter.provisioners.selection import AutoProvisioner

    class Discovery:  # the one call `auto` makes: is karpenter.sh/v1 served?
        calls = 0

        def request(self, method, path, **_):
            Discovery.calls += 1
            if Discovery.calls == 1:
                raise ConnectionError("API server unreachable")
            return {"resources": []}

    auto = select(_settings(tmp_path), Discovery(), list_nodes=lambda: [])
    assert isinstance(auto, AutoProvisioner) and auto.name == "auto"
    assert Discovery.calls == 0  # nothing is asked at construction
    request = NodeRequest("ns", "ws", "u", "Standard_NC6s_v3", 1, labels={"apps": "x"})
    with pytest.raises(ConnectionError):
        auto.ensure(request)  # the reconcile fails and is retried; no guess is kept
    assert auto.chosen is None
    assert auto.ensure(request).reason == "NoMatchingNodes"
    assert auto.name == "byo"


def test_polls_back_off_from_the_first_interval_with_retry_after_as_the_floor():
    interval, waits = 1.0, []
    for _ in range(7):
        wait, interval = next_delay(interval, 1.0, 30.0)
        waits.append(wait)
    assert waits == [1, 2, 4, 8, 16, 30, 30]
    assert next_delay(1.0, 15.0, 30.0) == (15.0, 2.0)  # ARM's pace is never beaten
    assert next_delay(1.0, None, 30.0) == (1.0, 2.0)


def test_byo_never_takes_a_node_a_provisioner_made_for_another_workspace():
    from kaito_jupyter.provisioners.byo import ByoProvisioner

    def node(name, **labels):
        return {
            "metadata": {"name": name, "labels": {"apps": "phi-3", **labels}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }

    theirs = node("a-pool-node", **{"kaito.sh/workspace": "other", "kaito.sh/workspacenamespace": "ns"})  # fmt: skip
    mine = node("b-pool-node", **{"kaito.sh/workspace": "ws", "kaito.sh/workspacenamespace": "ns"})  # fmt: skip
    plain = node("c-labelled-by-hand")
    request = NodeRequest(namespace="ns", name="ws", uid="u", instance_type=None, count=3, labels={"apps": "phi-3"})  # fmt: skip
    report = ByoProvisioner(lambda: [theirs, mine, plain]).ensure(request)
    assert report.ready == ("b-pool-node", "c-labelled-by-hand")
