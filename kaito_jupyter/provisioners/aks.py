"""The `aks` provisioner: one AKS agent pool per workspace, through azure-mgmt-containerservice.

Every call returns at once. A create or delete starts ARM's long-running operation and keeps
azure-core's poller, which polls in its own thread, backing off from ARM's Retry-After
(lro.py). While it runs, reconciles ask ARM nothing (they report the pool's nodes in the
cluster: "provisioning agent pool kw3f9a0c1d2e (1/2 nodes ready, 3m00s)"); when it ends,
`on_change` queues the workspace and the poller's final answer (the pool as ARM left it) is
read instead of a GET of our own.

Nothing leaks, nothing doubles:
- the pool's name is a function of the workspace's namespace/name (agent_pools.pool_name), so
  a controller that died between "create" and "record" finds its pool by name on restart, and
  the pool's tags say which workspace owns it: a pool with another owner is never touched;
- a create whose operation failed (quota found late, say) leaves a Failed pool in AKS: it is
  deleted at once, and the failure stays in ResourceReady until a slow retry;
- `release` deletes the pool (the reconciler calls it under the workspace's finalizer), and
  `collect` deletes pools tagged as ours whose workspace is gone.

ARM calls go through a Pacer (pacing.py): a per-workspace budget, Retry-After on 429 held for
every workspace, exponential backoff with jitter on 5xx and network errors. The SDK's own
retries are off (retry_total=0) so that no call ever sleeps inside a reconcile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kaito_jupyter.config import AzureSettings, Settings
from kaito_jupyter.controller.status import NodeReport
from kaito_jupyter.errors import ProvisioningError
from kaito_jupyter.provisioners import agent_pools, arm_errors
from kaito_jupyter.provisioners.arm_errors import ArmFailure
from kaito_jupyter.provisioners.azure_client import azure_settings, container_service_client
from kaito_jupyter.provisioners.base import NodeRequest
from kaito_jupyter.provisioners.lro import Operation, backoff_polling
from kaito_jupyter.provisioners.node_state import labelled, node_ready
from kaito_jupyter.provisioners.pacing import Pacer

log = logging.getLogger(__name__)

IN_PROGRESS = frozenset({"Creating", "Updating", "Scaling", "Upgrading", "Starting"})
PROVISIONING = "Provisioning"
NODES_READY = "NodesReady"
NODES_NOT_READY = "NodesNotReady"
INVALID_RESOURCE = "InvalidResource"
POOL_NAME_TAKEN = "AgentPoolNameTaken"
POOL_FAILED = "AgentPoolFailed"
COLLECT_KEY = "__collect__"


class AksProvisioner:
    name = "aks"

    def __init__(
        self,
        settings: Settings | AzureSettings,
        list_nodes: Callable[[], list[dict[str, Any]]] | None,
        *,
        client: Any = None,
        credential: Any = None,
        pacer: Pacer | None = None,
        poll_seconds: float = 5.0,
        collect_grace_seconds: float = 120.0,
        steady_refresh_seconds: float = 300.0,
        first_poll_seconds: float = 1.0,
        max_poll_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ):
        azure = azure_settings(settings)
        if not (azure.subscription_id and azure.resource_group and azure.cluster_name):
            raise ProvisioningError(
                "the aks provisioner needs the AKS cluster's subscription, resource group and name",
                reason="MissingConfiguration",
                hint="set AZURE_SUBSCRIPTION_ID, KAITO_AKS_RESOURCE_GROUP and KAITO_AKS_CLUSTER "
                "(or azure.* in kaito.yaml)",
            )
        self.resource_group = azure.resource_group
        self.cluster = azure.cluster_name
        self._client = client or container_service_client(azure, credential, retry_total=0)
        self._list_nodes = list_nodes
        self.pacer = pacer or Pacer()
        self.poll_seconds = poll_seconds
        self.collect_grace_seconds = collect_grace_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # pool -> the Operation (poller, kind, done flag) ARM is doing for it, until read
        self._pollers: dict[str, Operation] = {}
        self._failures: dict[str, ArmFailure] = {}  # pool -> a permanent failure being shown
        self._last: dict[str, NodeReport] = {}  # pool -> the last report, while calls are held
        # pool -> (what was asked, when ARM last said it was done): see _steady_report.
        self._steady: dict[str, tuple[tuple, float]] = {}
        self.steady_refresh_seconds = steady_refresh_seconds
        # (namespace, name) -> None: called when an operation of that workspace's pool ends
        # (the controller queues the workspace; set by it).
        self.on_change: Callable[[str, str], None] | None = None
        self.first_poll_seconds = first_poll_seconds
        self.max_poll_seconds = max_poll_seconds

    # -- the Provisioner interface -------------------------------------------------------------

    def ensure(self, request: NodeRequest) -> NodeReport:
        try:
            spec = agent_pools.render(request)
        except ValueError as exc:
            return NodeReport(
                required=max(request.count, 0),
                reason=INVALID_RESOURCE,
                message=str(exc),
                failed=True,
            )
        steady = self._steady_report(spec)
        if steady is not None:
            return steady
        wait = self.pacer.wait(spec.name)
        if wait > 0:
            return self._held(spec, wait)
        try:
            report = self._ensure(spec, request)
        except Exception as exc:
            failure = self._classify(exc, spec)
            report = self._failed(spec, failure)
        with self._lock:
            self._last[spec.name] = report
        return report

    def release(self, request: NodeRequest) -> bool:
        name = agent_pools.pool_name(request.namespace, request.name)
        with self._lock:
            held = self._failures.pop(name, None)
        if held is not None:
            # A failure that held the workspace's creates (quota) must not delay its deletion.
            self.pacer.unhold(name)
        if self.pacer.wait(name) > 0:
            return False
        op = self._operation(name)
        if op is not None and op.kind == "delete" and not op.done.is_set():
            return False  # ARM is deleting it; the poller says when it is done
        try:
            if op is not None and op.done.is_set() and op.kind == "delete":
                with self._lock:
                    self._pollers.pop(name, None)
                try:
                    op.poller.result(timeout=0)
                    self._forget(name)
                    return True  # ARM said the delete succeeded: the pool is gone
                except Exception:
                    pass  # the pool's own state says what is left: read it
            pool = self._get(name)
            if pool is None:
                self._forget(name)
                return True
            if agent_pools.owner(pool.tags) != (request.namespace, request.name):
                return True  # not ours: nothing of this workspace's to delete
            if pool.provisioning_state != "Deleting":
                self._delete(name, pool.tags)
            return False
        except Exception as exc:
            self._backoff(name, self._classify(exc, None, pool=name))
            return False

    def collect(self, live: set[tuple[str, str]]) -> list[str]:
        if self.pacer.wait(COLLECT_KEY) > 0:
            return []
        removed: list[str] = []
        try:
            self.pacer.spend(COLLECT_KEY)
            pools = list(self._client.agent_pools.list(self.resource_group, self.cluster))
            now = datetime.fromtimestamp(self._clock(), UTC)
            for pool in pools:
                owner = agent_pools.owner(pool.tags)
                if owner is None or owner in live or pool.provisioning_state == "Deleting":
                    continue
                created = agent_pools.created_at(pool.tags)
                # A pool created after the caller listed its workspaces is not an orphan yet.
                if created is None or (now - created).total_seconds() < self.collect_grace_seconds:
                    continue
                log.info("deleting agent pool %s: workspace %s/%s is gone", pool.name, *owner)
                self.pacer.spend(COLLECT_KEY)
                self._client.agent_pools.begin_delete(
                    self.resource_group, self.cluster, pool.name, polling=self._polling()
                )
                self._forget(pool.name)
                removed.append(pool.name)
            self.pacer.succeeded(COLLECT_KEY)
        except Exception as exc:
            self._backoff(COLLECT_KEY, self._classify(exc, None))
        return removed

    def _steady_report(self, spec: agent_pools.PoolSpec) -> NodeReport | None:
        """A pool ARM said was done, unchanged, with all its nodes Ready in the cluster: the
        node informer is enough, ARM is asked again only every steady_refresh_seconds. (The
        controller reconciles on every node event; a GET each time would spend ARM's read
        quota on pools that are fine.)"""
        with self._lock:
            seen = self._steady.get(spec.name)
        if seen is None:
            return None
        shape, checked = seen
        if shape != _shape(spec) or self._clock() - checked > self.steady_refresh_seconds:
            return None
        ready, _ = self._nodes(spec.name)
        if len(ready) < spec.count:
            return None
        return _ready_report(spec, ready)

    # -- ensure, step by step -----------------------------------------------------------------

    def _ensure(self, spec: agent_pools.PoolSpec, request: NodeRequest) -> NodeReport:
        op = self._operation(spec.name)
        if op is not None and not op.done.is_set():
            # ARM is still on our last operation: a GET would only say so again. Its poller
            # calls on_change when it ends.
            return self._in_flight(spec, op)
        failure, pool, known = self._operation_outcome(spec, op)
        if not known:
            pool = self._get(spec.name)
        if pool is None:
            return self._create(spec)
        owner = agent_pools.owner(pool.tags)
        if owner != (request.namespace, request.name):
            return NodeReport(
                required=spec.count,
                reason=POOL_NAME_TAKEN,
                message=f"an agent pool named {spec.name} already exists in {self.cluster} and "
                f"belongs to {'/'.join(owner) if owner else 'something else'}; it is left alone. "
                "Rename the workspace, or delete that pool if nothing uses it.",
                failed=True,
            )
        state = pool.provisioning_state
        if state == "Failed":
            failure = failure or self._failures.get(spec.name)
            if failure is None or not failure.permanent:
                failure = ArmFailure(
                    POOL_FAILED,
                    f"agent pool {spec.name} failed to provision; deleting it to try again",
                    permanent=False,
                )
            # A Failed pool is half-created: remove it now, keep the failure in the status.
            self._delete(spec.name, pool.tags)
            return self._failed(spec, failure)
        if failure is not None and failure.permanent:
            return self._failed(spec, failure)
        if state == "Deleting":
            return self._progress(spec, pool, f"agent pool {spec.name} is being deleted")
        if state in IN_PROGRESS:
            return self._progress(spec, pool)
        if pool.vm_size and pool.vm_size.lower() != spec.vm_size.lower():
            # AKS cannot change a pool's VM size: replace the pool.
            self._delete(spec.name, pool.tags)
            return self._progress(
                spec,
                pool,
                f"replacing agent pool {spec.name}: its VM size is {pool.vm_size}, the workspace "
                f"asks for {spec.vm_size}",
            )
        if pool.count != spec.count or (pool.node_labels or {}) != spec.node_labels:
            self._put(spec, created=agent_pools.created_at(pool.tags))
            return self._progress(spec, pool)
        ready, seen = self._nodes(spec.name)
        self.pacer.succeeded(spec.name)
        with self._lock:
            self._failures.pop(spec.name, None)
        if len(ready) >= spec.count:
            with self._lock:
                self._steady[spec.name] = (_shape(spec), self._clock())
            return _ready_report(spec, ready)
        return NodeReport(
            required=spec.count,
            ready=ready,
            reason=NODES_NOT_READY,
            message=f"agent pool {spec.name} is provisioned; waiting for its nodes to be Ready "
            f"({len(ready)}/{spec.count} ready, {seen} joined)",
            retry_after=self.poll_seconds,
        )

    def _create(self, spec: agent_pools.PoolSpec) -> NodeReport:
        log.info("creating agent pool %s (%d x %s)", spec.name, spec.count, spec.vm_size)
        self._put(spec)
        return NodeReport(
            required=spec.count,
            reason=PROVISIONING,
            message=f"provisioning agent pool {spec.name} ({agent_pools.progress(0, spec.count, 0)})",
            retry_after=self.poll_seconds,
        )

    def _progress(self, spec, pool, what: str | None = None) -> NodeReport:
        created = agent_pools.created_at(pool.tags)
        elapsed = self._clock() - created.timestamp() if created else 0.0
        return self._provisioning(spec, what or f"provisioning agent pool {spec.name}", elapsed)

    def _in_flight(self, spec: agent_pools.PoolSpec, op: Operation) -> NodeReport:
        what = (
            f"agent pool {spec.name} is being deleted"
            if op.kind == "delete"
            else f"provisioning agent pool {spec.name}"
        )
        return self._provisioning(spec, what, self._clock() - op.created.timestamp())

    def _provisioning(self, spec, what: str, elapsed: float) -> NodeReport:
        """Still provisioning: `what`, with the pool's nodes ready so far and the time taken."""
        ready, _ = self._nodes(spec.name)
        return NodeReport(
            required=spec.count,
            ready=ready,
            reason=PROVISIONING,
            message=f"{what} ({agent_pools.progress(len(ready), spec.count, elapsed)})",
            retry_after=self.poll_seconds,
        )

    def _operation(self, name: str) -> Operation | None:
        with self._lock:
            return self._pollers.get(name)

    def _operation_outcome(self, spec: agent_pools.PoolSpec, op: Operation | None):
        """What the pool's finished last operation says: (its failure or None, the pool as the
        operation left it, whether that is known without asking ARM again). A create's poller
        ends with a GET of the pool, and a delete that succeeded leaves none."""
        if op is None:
            return None, None, False
        with self._lock:
            self._pollers.pop(spec.name, None)
        try:
            result = op.poller.result(timeout=0)
        except Exception as exc:
            failure = self._classify(exc, spec)
            if failure.permanent or failure.reason not in (
                arm_errors.ARM_UNAVAILABLE,
                arm_errors.ARM_THROTTLED,
                arm_errors.ARM_UNREACHABLE,
            ):
                with self._lock:
                    self._failures[spec.name] = failure
                return failure, None, False
            # Polling itself failed (a 5xx, say): the pool's state is the truth; read on.
            return None, None, False
        if op.kind == "delete":
            return None, None, True
        if result is not None and getattr(result, "provisioning_state", None):
            return None, result, True
        return None, None, False

    # -- failures ------------------------------------------------------------------------------

    def _classify(self, exc: BaseException, spec, pool: str = "") -> ArmFailure:
        context = {"pool": pool}
        if spec is not None:
            context = {"pool": spec.name, "vm_size": spec.vm_size, "count": spec.count}
        try:
            return arm_errors.from_exception(exc, **context)
        except Exception:
            log.exception("unexpected error from the aks provisioner")
            return ArmFailure(
                POOL_FAILED, f"unexpected error: {type(exc).__name__}: {exc}", permanent=False
            )

    def _failed(self, spec: agent_pools.PoolSpec, failure: ArmFailure) -> NodeReport:
        delay = self._backoff(spec.name, failure)
        try:
            ready, _ = self._nodes(spec.name)
        except Exception:
            ready = ()
        return NodeReport(
            required=spec.count,
            ready=ready,
            reason=failure.reason,
            message=failure.message,
            failed=failure.permanent,
            retry_after=delay,
        )

    def _backoff(self, key: str, failure: ArmFailure) -> float:
        if failure.reason == arm_errors.ARM_THROTTLED:
            return self.pacer.throttled(failure.retry_after, key)
        if failure.permanent:
            with self._lock:
                self._failures[key] = failure
            self.pacer.hold(key, arm_errors.PERMANENT_RETRY_SECONDS)
            return arm_errors.PERMANENT_RETRY_SECONDS
        return self.pacer.failed(key, at_least=failure.retry_after)

    def _held(self, spec: agent_pools.PoolSpec, wait: float) -> NodeReport:
        with self._lock:
            last = self._last.get(spec.name)
        if last is None:
            return NodeReport(
                required=spec.count,
                reason=PROVISIONING,
                message=f"waiting {wait:.0f}s before the next ARM call for agent pool {spec.name}",
                retry_after=wait,
            )
        return NodeReport(
            required=last.required,
            ready=last.ready,
            reason=last.reason,
            message=last.message,
            failed=last.failed,
            retry_after=wait,
        )

    # -- ARM and the cluster -------------------------------------------------------------------

    def _get(self, name: str):
        from azure.core.exceptions import ResourceNotFoundError

        self.pacer.spend(name)
        try:
            return self._client.agent_pools.get(self.resource_group, self.cluster, name)
        except ResourceNotFoundError:
            return None

    def _put(self, spec: agent_pools.PoolSpec, created: datetime | None = None) -> None:
        from azure.mgmt.containerservice.models import AgentPool

        tags = dict(spec.tags)
        if created is not None:  # an update keeps the pool's birth date (cost, progress)
            tags[agent_pools.TAG_CREATED] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = AgentPool(**{**spec.sdk_kwargs(), "tags": tags})
        self.pacer.spend(spec.name)
        poller = self._client.agent_pools.begin_create_or_update(
            self.resource_group, self.cluster, spec.name, body, polling=self._polling()
        )
        born = agent_pools.created_at(tags) or datetime.fromtimestamp(self._clock(), UTC)
        op = Operation(poller, "create", born)
        with self._lock:
            self._pollers[spec.name] = op
            self._failures.pop(spec.name, None)
        op.watch(self._waker(spec.tags))

    def _delete(self, name: str, tags: dict[str, str] | None = None) -> None:
        log.info("deleting agent pool %s", name)
        with self._lock:
            self._steady.pop(name, None)
        self.pacer.spend(name)
        poller = self._client.agent_pools.begin_delete(
            self.resource_group, self.cluster, name, polling=self._polling()
        )
        op = Operation(poller, "delete", datetime.fromtimestamp(self._clock(), UTC))
        with self._lock:
            self._pollers[name] = op
        op.watch(self._waker(tags))

    def _polling(self):
        return backoff_polling(self.first_poll_seconds, self.max_poll_seconds)

    def _waker(self, tags: dict[str, str] | None):
        owner = agent_pools.owner(tags)
        if owner is None:
            return None

        def wake() -> None:
            if self.on_change is not None:
                self.on_change(*owner)

        return wake

    def _forget(self, name: str) -> None:
        with self._lock:
            self._steady.pop(name, None)
            self._pollers.pop(name, None)
            self._last.pop(name, None)
            self._failures.pop(name, None)
        self.pacer.forget(name)

    def _nodes(self, pool: str) -> tuple[tuple[str, ...], int]:
        """Names of the pool's Ready nodes, and how many of its nodes joined at all."""
        if self._list_nodes is None:
            return (), 0
        members = labelled(self._list_nodes(), agent_pools.LABEL_AGENT_POOL, pool)
        ready = tuple(sorted(n["metadata"]["name"] for n in members if node_ready(n)))
        return ready, len(members)


def _shape(spec: agent_pools.PoolSpec) -> tuple:
    return (spec.vm_size.lower(), spec.count, tuple(sorted(spec.node_labels.items())))


def _ready_report(spec: agent_pools.PoolSpec, ready: tuple[str, ...]) -> NodeReport:
    return NodeReport(
        required=spec.count,
        ready=ready,
        reason=NODES_READY,
        message=f"agent pool {spec.name}: {len(ready)}/{spec.count} nodes ready",
    )
