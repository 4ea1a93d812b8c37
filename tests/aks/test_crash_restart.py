"""Controllers that die at any point leave no duplicate and no leaked agent pool.

30 workspaces, in three batches of ten run side by side, each driven by its own controller
that is killed (replaced by a fresh one with no memory) at random between any two calls;
each workspace is deleted at a random moment, often while its pool is still being created.
The ARM request log is the witness: one create per pool, and at the end no pool, no node.
"""

from __future__ import annotations

import random
import time
import uuid

from kaito_jupyter.provisioners import agent_pools
from kaito_jupyter.provisioners.aks import AksProvisioner
from kaito_jupyter.provisioners.base import NodeRequest
from kaito_jupyter.provisioners.pacing import Pacer
from tests.aks.test_aks_provisioner import node_lister

BATCHES, PER_BATCH = 3, 10


def _controller(settings, list_nodes):
    pacer = Pacer(calls_per_minute=120, base_delay=0.2, max_delay=2.0)
    return AksProvisioner(settings, list_nodes, pacer=pacer, poll_seconds=0.3)


def test_random_crashes_leave_no_duplicate_and_no_leaked_pool(azure_settings, arm, testbed):
    arm.configure(provisioning_seconds=0.5)
    api = testbed.new_api_client()
    list_nodes = node_lister(api)
    rng = random.Random(20261203)
    crashes = 0
    pools: list[str] = []
    try:
        for batch in range(BATCHES):
            runs = {}
            for i in range(PER_BATCH):
                name = f"crash-{batch}-{i}"
                request = NodeRequest(
                    namespace="default",
                    name=name,
                    uid=str(uuid.uuid4()),
                    instance_type="Standard_NC6s_v3",
                    count=1,
                )
                runs[name] = {
                    "request": request,
                    "controller": _controller(azure_settings, list_nodes),
                    "phase": "up",
                    "delete_after": rng.randint(1, 8),  # ticks before the user deletes it
                    "ticks": 0,
                }
                pools.append(agent_pools.pool_name("default", name))
            deadline = time.monotonic() + 240
            while any(run["phase"] != "gone" for run in runs.values()):
                assert time.monotonic() < deadline, {n: r["phase"] for n, r in runs.items()}
                for run in runs.values():
                    if run["phase"] == "gone":
                        continue
                    if run["ticks"] and rng.random() < 0.3:
                        run["controller"] = _controller(azure_settings, list_nodes)
                        crashes += 1
                    run["ticks"] += 1
                    if run["phase"] == "up":
                        report = run["controller"].ensure(run["request"])
                        assert not report.failed, report
                        if run["ticks"] >= run["delete_after"]:
                            run["phase"] = "down"
                    elif run["controller"].release(run["request"]):
                        run["phase"] = "gone"
                time.sleep(0.2)
    finally:
        api.close()

    assert crashes > 30
    for pool in pools:
        statuses = [e["status"] for e in arm.requests("agentPools.createOrUpdate", pool=pool)]
        assert statuses == [201], (pool, statuses)  # created once, never again
    names = {p["name"] for p in arm.pools.list()}
    assert not names & set(pools), "pools were leaked"
    left = [
        n.metadata.name
        for n in testbed.core().list_node().items
        if n.metadata.labels.get("kubernetes.azure.com/agentpool") in pools
    ]
    assert left == [], "nodes were leaked"
