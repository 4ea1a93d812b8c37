"""Control plane: the kubernetes backend's reconciler on the real test bed.

One test bed (kube-apiserver with an audit policy, etcd, controller-manager, scheduler, KWOK)
and the simulated ARM serve every case. Each run is a fresh namespace, fresh nodes and a fresh
`kaito controller --backend kubernetes` subprocess (so its CPU and peak RSS are that run's),
then N workspaces (inference and tuning alternating) applied in one `backend.apply` call.

What is timed rides watches in this process, the way a user's `kaito get -w` sees it:
- workspace seen -> every object created: its workload (Deployment/StatefulSet or Job) and, for
  inference, its Service, all seen by the watch;
- apply call started -> InferenceReady / WorkspaceSucceeded True (KWOK stages make pods Ready
  and make tuning pods exit 0).
API writes are the API server's own audit log (create/update/patch/delete by the controller's
user agent, including its Lease renewals and Events); ARM calls are the simulator's request log.
KAITO_BENCH_CP_WORKERS=N runs the controller with `--workers N` (unset: its default).
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks.harness import Context, Goal, Section, median, table
from kaito_jupyter.backends.kubernetes.controller import DEFAULT_WORKERS

TITLE = "Control plane: the kubernetes reconciler on the test bed"
SKU = "Standard_NC6s_v3"  # one V100 per node: one workspace per node, as Kaito places them
BYO_SIZES = (1, 50, 200)
AKS_SIZES = (1, 50)  # see LEFT_200_AKS
LEFT_200_AKS = (
    "200 workspaces on the simulated ARM are left out: the simulator makes each pool's node and "
    "polls the API server for it from a thread of its own, so 200 pools are 200 pollers on the same "
    "2 cores as the API server and the reconciler, and the run measures the simulator."
)
LEFT_200_BYO = (
    "200 byo workspaces were not run in this invocation (`KAITO_BENCH_CP_SIZES=1,50`): within "
    "this session's time on the shared 2-core machine, the 1- and 50-workspace cases with three "
    "runs each, both provisioners, came first, and 50 already took longer than the 60 s the "
    "goal allows 200. `python -m benchmarks --only control_plane` runs all sizes."
)
SETTLE_SECONDS = 2.0  # after the last workspace is ready, writes still in flight are counted
GOAL_CREATE_P50 = 0.5
GOAL_ALL_READY = 60.0
GOAL_WRITES = 20
GOAL_ARM = 6
GOAL_RSS_MB = 300

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
CONTROLLER_AGENT = "kaito-jupyter"  # Kube sets it; the benchmark's own client says kaito-bench

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
"""

INFERENCE = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "resource": {"instanceType": SKU},
    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
}
TUNING = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "resource": {"instanceType": SKU},
    "tuning": {
        "preset": {"name": "phi-3-mini-128k-instruct"},
        "method": "qlora",
        "input": {"urls": ["https://huggingface.co/datasets/example/dolly/resolve/main/t.parquet"]},
        "output": {
            "image": "registry.example.com/bench/adapter:0.0.1",
            "imagePushSecret": "bench-push",
        },
    },
}


def workspaces(n: int, prefix: str) -> list[dict]:
    """N workspaces, each selecting its own node(s) by a label of its own, as in Kaito's README."""
    docs = []
    for i in range(n):
        base = INFERENCE if i % 2 == 0 else TUNING
        doc = json.loads(json.dumps(base))
        doc["metadata"] = {"name": f"ws-{i:03d}"}
        doc["resource"]["labelSelector"] = {"matchLabels": {"bench": f"{prefix}-{i:03d}"}}
        docs.append(doc)
    return docs


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


# -- the reconciler subprocess -------------------------------------------------------------------


def _proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the command: state is field 3; utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _default_sigint() -> None:
    # A shell's background job starts with SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: give the child the default so SIGINT is its clean stop.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Reconciler:
    """`kaito controller --backend kubernetes --namespace NS` as a subprocess."""

    def __init__(self, env: dict[str, str], namespace: str, workdir: Path):
        self.log_path = workdir / f"controller-{namespace}.log"
        self._log = self.log_path.open("wb")
        argv = [sys.executable, "-m", "kaito_jupyter.cli", "controller"]
        workers = os.environ.get("KAITO_BENCH_CP_WORKERS")  # unset: the controller's default
        if workers:
            argv += ["--workers", workers]
        self.popen = subprocess.Popen(
            [*argv, "--backend", "kubernetes", "--namespace", namespace],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_default_sigint,
        )

    def wait_leading(self, kube, timeout: float = 60) -> None:
        from kaito_jupyter.backends.kubernetes.kube import LEASE

        deadline = time.monotonic() + timeout
        marker = f"-{self.popen.pid}-"
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"the controller exited: {self.log_path.read_text()[-2000:]}")
            lease = kube.find(LEASE, "kaito-jupyter-controller", "kube-system") or {}
            if marker in ((lease.get("spec") or {}).get("holderIdentity") or ""):
                return
            time.sleep(0.1)
        raise TimeoutError("the controller never took its Lease")

    def cpu_seconds(self) -> float:
        return _proc_cpu_seconds(self.popen.pid)

    def peak_rss_mb(self) -> float:
        return _proc_peak_rss_mb(self.popen.pid)

    def stop(self) -> dict[str, int]:
        """SIGINT (a clean stop that releases the Lease); its own count of what it did."""
        self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._log.close()
        text = self.log_path.read_text(errors="replace")
        m = re.search(r"controller stopped: (\d+) reconciles, (\d+) requeues, (\d+) retries", text)
        if not m:
            return {"reconciles": -1, "requeues": -1, "retries": -1}
        return dict(zip(("reconciles", "requeues", "retries"), map(int, m.groups()), strict=True))


# -- watching from the benchmark ------------------------------------------------------------------


class Watcher:
    """First-seen times of each workspace, its objects, and its ready condition."""

    def __init__(self, kube, namespace: str):
        from kaito_jupyter.backends.kubernetes.informer import Informer
        from kaito_jupyter.backends.kubernetes.kube import (
            DEPLOYMENT,
            JOB,
            SERVICE,
            STATEFULSET,
            WORKSPACE,
        )
        from kaito_jupyter.controller.plan import WORKSPACE_LABEL

        self.label = WORKSPACE_LABEL
        self.lock = threading.Lock()
        self.seen: dict[str, float] = {}
        self.kinds: dict[str, dict[str, float]] = {}
        self.ready: dict[str, float] = {}
        self.all_ready = threading.Event()
        self.expected = 0
        self.mode: dict[str, str] = {}
        self.informers = [Informer(kube, WORKSPACE, namespace, name="bench-workspaces")]
        self.informers[0].add_handler(self._workspace)
        for kind in (DEPLOYMENT, STATEFULSET, JOB, SERVICE):
            inf = Informer(
                kube, kind, namespace, label_selector=WORKSPACE_LABEL, name=f"bench-{kind.plural}"
            )
            inf.add_handler(lambda _t, obj, kind=kind.plural: self._owned(kind, obj))
            self.informers.append(inf)

    def start(self) -> None:
        for inf in self.informers:
            inf.start()
        for inf in self.informers:
            inf.synced.wait(30)

    def stop(self) -> None:
        for inf in self.informers:
            inf.stop()

    def _workspace(self, _type: str, obj: dict) -> None:
        now = time.monotonic()
        name = obj["metadata"]["name"]
        mode = "tuning" if obj.get("tuning") else "inference"
        want = "WorkspaceSucceeded" if mode == "tuning" else "InferenceReady"
        conds = {
            c.get("type"): c.get("status")
            for c in (obj.get("status") or {}).get("conditions") or []
        }
        with self.lock:
            self.seen.setdefault(name, now)
            self.mode[name] = mode
            if conds.get(want) == "True" and name not in self.ready:
                self.ready[name] = now
                if self.expected and len(self.ready) >= self.expected:
                    self.all_ready.set()

    def _owned(self, kind: str, obj: dict) -> None:
        now = time.monotonic()
        ws = ((obj.get("metadata") or {}).get("labels") or {}).get(self.label)
        if ws:
            with self.lock:
                self.kinds.setdefault(ws, {}).setdefault(kind, now)

    def created(self, name: str) -> float | None:
        """When every object of the workspace had been seen, or None."""
        with self.lock:
            kinds = self.kinds.get(name, {})
            mode = self.mode.get(name)
        if mode == "tuning":
            return kinds.get("jobs")
        workload = kinds.get("deployments") or kinds.get("statefulsets")
        if workload is None or "services" not in kinds:
            return None
        return max(workload, kinds["services"])


# -- the audit log --------------------------------------------------------------------------------


def controller_writes(audit_log: Path, offset: int) -> Counter:
    """create/update/patch/delete requests of the controller's user agent, by resource."""
    counts: Counter = Counter()
    with audit_log.open("rb") as f:
        f.seek(offset)
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("verb") not in WRITE_VERBS:
                continue
            if not (event.get("userAgent") or "").startswith(CONTROLLER_AGENT):
                continue
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", "?") + (
                "/" + ref["subresource"] if ref.get("subresource") else ""
            )
            counts[f"{event['verb']} {resource}"] += 1
    return counts


# -- one run --------------------------------------------------------------------------------------


def one_run(bed, kube, backend_for, env: dict, provisioner: str, n: int, run: int) -> dict:
    from kaito_jupyter.backends.kubernetes.kube import NAMESPACE, WORKSPACE
    from tests.testbed.bed import NodeGroup

    ns = f"cp-{provisioner}-{n}-{run}"
    kube.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    docs = workspaces(n, ns)
    byo_nodes: list[str] = []
    if provisioner == "byo":  # one node per workspace, labelled for it, Ready before the apply
        for i, doc in enumerate(docs):
            labels = doc["resource"]["labelSelector"]["matchLabels"]
            group = NodeGroup(SKU, 1, pool=f"b{n}r{run}w{i}", labels=labels)
            byo_nodes += bed.add_gpu_nodes(group, wait=False)
        bed.wait_nodes_ready(byo_nodes, timeout=120)
    arm = bed.arm
    pools_before = {p["name"] for p in arm.pools.list()} if arm else set()
    arm_before = len(arm.requests()) if arm else 0

    controller = Reconciler(env, ns, bed.dir)
    try:
        controller.wait_leading(kube)
        watcher = Watcher(kube, ns)
        watcher.expected = n
        watcher.start()
        audit = bed.dir / "audit.log"
        offset = audit.stat().st_size
        cpu0 = controller.cpu_seconds()
        t0 = time.monotonic()
        backend_for(ns).apply(docs)
        apply_s = time.monotonic() - t0
        timeout = 120 + 2 * n
        done = watcher.all_ready.wait(timeout)
        t_ready = time.monotonic()
        time.sleep(SETTLE_SECONDS)
        cpu = controller.cpu_seconds() - cpu0
        rss = controller.peak_rss_mb()
        watcher.stop()
        counts = controller_writes(audit, offset)
    finally:
        said = controller.stop()
    created = [
        watcher.created(name) - watcher.seen[name] for name in watcher.seen if watcher.created(name)
    ]
    ready = [watcher.ready[name] - t0 for name in watcher.ready]
    arm_entries = arm.requests()[arm_before:] if arm else []
    result = {
        "n": n,
        "provisioner": provisioner,
        "apply_s": apply_s,
        "all_ready": done,
        "ready_count": len(ready),
        "all_ready_s": (t_ready - t0) if done else float("nan"),
        "created": created,
        "ready": ready,
        "writes": sum(counts.values()),
        "writes_by": dict(counts),
        # Entra (token) requests are the simulator's too; ARM calls are the management API's.
        "arm_calls": sum(not (e.get("operation") or "").startswith("entra.") for e in arm_entries),
        "arm_by": dict(Counter(e.get("operation") or "?" for e in arm_entries)),
        "cpu_s": cpu,
        "rss_mb": rss,
        "workers": int(os.environ.get("KAITO_BENCH_CP_WORKERS") or DEFAULT_WORKERS),
        **said,
    }
    if not done:  # say why on the page's JSON rather than lose it with the bed's directory
        result["log_tail"] = controller.log_path.read_text(errors="replace")[-3000:]
        stuck = [
            o
            for o in kube.list(WORKSPACE, ns).get("items") or []
            if o["metadata"]["name"] not in watcher.ready
        ]
        result["stuck"] = [
            (o["metadata"]["name"], (o.get("status") or {}).get("conditions")) for o in stuck[:3]
        ]
    _clean(bed, kube, ns, byo_nodes, pools_before, WORKSPACE)
    return result


def _clean(bed, kube, ns: str, byo_nodes: list[str], pools_before: set[str], workspace_kind):
    """Nothing of a run outlives it: finalizers off, namespace and nodes (or pools) gone."""
    from kaito_jupyter.backends.kubernetes.kube import NAMESPACE

    for obj in kube.list(workspace_kind, ns).get("items") or []:
        kube.patch(workspace_kind, obj["metadata"]["name"], ns, {"metadata": {"finalizers": None}})
    kube.delete(NAMESPACE, ns)
    if byo_nodes:
        bed.delete_nodes(byo_nodes, wait=False)
    if bed.arm is not None:
        for pool in bed.arm.pools.list():
            if pool["name"] not in pools_before:
                bed.arm.pools.delete(pool["name"], operation_seconds=0)


# -- the section ------------------------------------------------------------------------------------


def _bed(workdir: Path):
    from tests.testbed.bed import Testbed

    policy = workdir / "audit-policy.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    policy.write_text(AUDIT_POLICY)
    args = [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={workdir / 'audit.log'}",
        "--audit-log-format=json",
        "--audit-log-maxsize=0",
    ]
    return Testbed(workdir, arm=True, apiserver_args=args)


def measure(ctx: Context) -> list[dict]:
    from kaito_jupyter import config
    from kaito_jupyter.backends.kubernetes.backend import KubernetesBackend
    from kaito_jupyter.backends.kubernetes.install import install
    from kaito_jupyter.backends.kubernetes.kube import Kube

    byo_sizes = (1, 5) if ctx.quick else BYO_SIZES
    aks_sizes = (1, 5) if ctx.quick else AKS_SIZES
    only = os.environ.get("KAITO_BENCH_CP_ONLY")  # "byo" or "aks": one provisioner's cases
    if only == "byo":
        aks_sizes = ()
    elif only == "aks":
        byo_sizes = ()
    sizes = os.environ.get("KAITO_BENCH_CP_SIZES")  # e.g. "1,50": fewer cases, same code
    if sizes:
        wanted = {int(s) for s in sizes.split(",")}
        byo_sizes = tuple(s for s in byo_sizes if s in wanted)
        aks_sizes = tuple(s for s in aks_sizes if s in wanted)
    results = []
    with tempfile.TemporaryDirectory(prefix="kaito-bench-cp-") as tmp:
        bed = _bed(Path(tmp) / "bed").start()
        try:
            kube = Kube(str(bed.kubeconfig))
            kube.api.user_agent = "kaito-bench"  # not counted as the controller's writes
            install(kube)
            jupyter_dir = Path(tmp) / "jupyter"
            jupyter_dir.mkdir()
            base_env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("KAITO_", "AZURE_"))},
                "KUBECONFIG": str(bed.kubeconfig),
                "JUPYTER_CONFIG_DIR": str(jupyter_dir),
                "KAITO_LEASE_NAMESPACE": "kube-system",
                "OMP_NUM_THREADS": "1",
            }

            def backend_for(ns: str):
                s = config.Settings(
                    backend="kubernetes", kubeconfig=str(bed.kubeconfig), namespace=ns
                )
                s.kubernetes.lease_namespace = "kube-system"
                return KubernetesBackend(s, kube=kube)

            cases = [("byo", n) for n in byo_sizes] + [("aks", n) for n in aks_sizes]
            for provisioner, n in cases:
                env = dict(base_env)
                if provisioner == "aks":
                    env.update(bed.arm.environment())
                else:
                    env["KAITO_PROVISIONER"] = "byo"
                for run in range(ctx.runs):
                    print(f"   {provisioner} x{n} run {run + 1}", file=sys.stderr, flush=True)
                    results.append(one_run(bed, kube, backend_for, env, provisioner, n, run))
            kube.close()
        finally:
            bed.stop()
    return results


def _summary(rows: list[dict]) -> dict:
    """Medians over runs of each run's p50/p95 and totals."""
    n = rows[0]["n"]

    def med(f):
        return median(f(r) for r in rows)

    return {
        "provisioner": rows[0]["provisioner"],
        "n": n,
        "runs": len(rows),
        "created_p50": med(lambda r: percentile(r["created"], 50)),
        "created_p95": med(lambda r: percentile(r["created"], 95)),
        "ready_p50": med(lambda r: percentile(r["ready"], 50)),
        "ready_p95": med(lambda r: percentile(r["ready"], 95)),
        "all_ready_s": med(lambda r: r["all_ready_s"]),
        "all_ready_runs": sum(r["all_ready"] for r in rows),
        "apply_s": med(lambda r: r["apply_s"]),
        "writes": med(lambda r: r["writes"] / n),
        "arm": med(lambda r: r["arm_calls"] / n),
        "requeues": med(lambda r: r["requeues"] / n),
        "reconciles": med(lambda r: r["reconciles"] / n),
        "cpu_s": med(lambda r: r["cpu_s"]),
        "rss_mb": max(r["rss_mb"] for r in rows),
        "writes_by": rows[len(rows) // 2]["writes_by"],
        "arm_by": rows[len(rows) // 2]["arm_by"],
    }


def run(ctx: Context) -> Section:
    results = measure(ctx)
    (ctx.out / "control_plane_runs.json").write_text(json.dumps(results, indent=1))
    return render(results)


def _not_run_200(by: dict, sizes_run: list[int]) -> str:
    largest = max((n for p, n in by if p == "byo"), default=0)
    if not largest:
        return "not run"
    took = by[("byo", largest)]["all_ready_s"]
    return f"not run; {largest} took {took:.1f} s, so 200 would not meet it here"


# Before issue 15's levers (2 workers; every object GET and re-applied and every Event read
# first, on each reconcile; every node change queueing every workspace; ARM polled at its
# Retry-After): the parent commit's tree (4c33948) run through its own harness's measure() on
# this machine straight after the table's run, 3 runs, 50 workspaces (KAITO_BENCH_CP_SIZES=50).
BEFORE_COMMIT = "4c33948"
BEFORE = {
    "byo": {
        "created_p50": 1.77,
        "all_ready_s": 8.09,
        "writes": 9.08,
        "reconciles": 3.46,
        "apply_s": 1.13,
        "reapplies": 2.76,  # patch deployments + patch services, per workspace
        "events": 2.5,
    },
    "aks": {
        "created_p50": 7.91,
        "all_ready_s": 15.3,
        "writes": 10.38,
        "arm": 10.28,
        "apply_s": 0.53,
    },
}
# Exploratory single runs, byo, 50 workspaces whose apply call took about 0.5 s (a tighter
# burst than the table's runs), KAITO_BENCH_CP_WORKERS=2/4/8/16, on this branch before the
# node-interest and timer levers.
WORKERS_SWEEP = (
    "created p50 1.6 / 2.2 / 2.0 / 2.1 s and all ready 8.1 / 8.4 / 8.3 / 8.3 s with 2 / 4 / 8 "
    "/ 16 workers"
)


def _per_ws(s: dict, *keys: str) -> float:
    return sum(s["writes_by"].get(k, 0) for k in keys) / s["n"]


def _where_the_time_goes(by: dict) -> list[str]:
    """The profile, from the figures: what the reconciler waits on and what it writes."""
    s = by.get(("byo", max((n for p, n in by if p == "byo"), default=0)))
    if not s or s["n"] < 2:
        return []
    busy = s["cpu_s"] / s["all_ready_s"] if s["all_ready_s"] else float("nan")
    out = [
        f"**Where the time goes** (byo, {s['n']} workspaces): the reconciler used "
        f"{s['cpu_s']:.1f} CPU s over {s['all_ready_s']:.0f} s to all ready ({busy:.0%} of one "
        f"core), with {DEFAULT_WORKERS} workers (the controller's default; `kaito controller "
        "--workers N`). Per workspace it made "
        f"{s['reconciles']:.1f} reconciles and {s['writes']:.1f} writes: "
        f"{_per_ws(s, 'patch deployments', 'patch services', 'patch jobs'):.1f} server-side "
        "applies (only the objects' creation: an apply whose rendered object is what the "
        "server holds from our last apply is skipped), "
        f"{_per_ws(s, 'patch workspaces/status'):.1f} status patches, "
        f"{_per_ws(s, 'patch workspaces'):.1f} finalizer patch and "
        f"{_per_ws(s, 'create events'):.1f} Events (sent create-first from a thread of their "
        "own). A first "
        "reconcile is 7 round trips (GET the workspace, patch its finalizer, GET and apply the "
        "workload, GET and apply the Service, patch the status); the Deployments, Jobs, "
        "Services and pods it reads come from the controller's watches.",
        "",
        "*Created* counts from each workspace's arrival, and they arrive over the apply call: "
        + ", ".join(
            f"{x['apply_s']:.1f} s for {x['n']} ({x['n'] / x['apply_s']:.0f} a second)"
            for (p, n), x in sorted(by.items())
            if p == "byo" and n > 1 and x["apply_s"]
        )
        + ", one client's creates in turn while the reconciler works. At that rate created p50 "
        "is "
        + ", ".join(
            f"{x['created_p50']:.2f} s at {x['n']}"
            for (p, n), x in sorted(by.items())
            if p == "byo" and n > 1
        )
        + f" (goal {GOAL_CREATE_P50} s). A tighter burst is slower: in exploratory single runs "
        "where 50 arrived within 0.5 s, "
        f"{WORKERS_SWEEP}. The reconciler is idle most of that time; the API server and etcd "
        "share the 2 cores with KWOK, the scheduler, the controller-manager (making the "
        "ReplicaSets, pods and Jobs' pods of the same burst), the simulator and this watcher, "
        "so each round trip waits its turn, and more workers only queue more of them. 8 is "
        "the default because against a remote API server (tens of ms a round trip, not "
        "CPU-bound) independent reconciles overlap their waits; here it costs about 1 MB.",
    ]
    mid, amid = by.get(("byo", 50)), by.get(("aks", 50))
    if mid and amid:
        b, ba = BEFORE["byo"], BEFORE["aks"]
        out += [
            "",
            f"**Before and after**, 50 workspaces, medians of 3, the same machine (before: the "
            f"parent commit {BEFORE_COMMIT}, run right after this table): byo created p50 "
            f"{b['created_p50']:g} -> {mid['created_p50']:.2f} s (its apply call {b['apply_s']:g} "
            f"-> {mid['apply_s']:.1f} s, so the arrivals were tighter before), all ready "
            f"{b['all_ready_s']:g} -> {mid['all_ready_s']:.1f} s, API writes {b['writes']:g} -> "
            f"{mid['writes']:.1f} and reconciles {b['reconciles']:g} -> {mid['reconciles']:.1f} "
            f"per workspace; aks all ready {ba['all_ready_s']:g} -> {amid['all_ready_s']:.1f} s, "
            f"ARM calls {ba['arm']:g} -> {amid['arm']:.2f} and API writes {ba['writes']:g} -> "
            f"{amid['writes']:.1f} per workspace. So on this machine today the old reconciler's "
            "times were already close to these: the previous page's 23.5 s created p50 and "
            "63.6 s all ready at 50 were measured while the machine was busy with other work "
            "(its apply call took 3.3 s), not the code's. What the levers change: ARM calls "
            "halved (the goal that was not met); fewer writes for byo (Deployment/Service "
            f"patches {b['reapplies']:g} -> {_per_ws(mid, 'patch deployments', 'patch services'):.1f} "
            f"per workspace, Events {b['events']:g} -> {_per_ws(mid, 'create events'):.1f}: one "
            "Created for the objects a reconcile makes, not one per object); fewer round trips "
            "per reconcile (reads from the watches, Events off "
            "its path), which leaves more reconciles per workspace (fewer changes coalesce "
            "while one runs) at the same times. The node-interest and one-timer levers are what "
            "kept aks from re-reading every provisioning workspace on every node event once "
            "the workers were fast (69 reconciles per workspace at 50 in a single run without "
            "them). The aks rows write more than before: their status message carries the "
            "seconds elapsed (see ARM below).",
        ]
    aks = by.get(("aks", max((n for p, n in by if p == "aks"), default=0)))
    if aks and aks["n"] >= 2:
        arm = aks["arm_by"]
        n = aks["n"]
        calls = ", ".join(
            f"{k} {v / n:.1f}"
            for k, v in sorted(arm.items(), key=lambda kv: -kv[1])
            if not k.startswith("entra.")
        )
        out += [
            "",
            f"**ARM** (aks, {n} workspaces): {aks['arm']:.1f} calls per workspace (before: "
            f"{BEFORE['aks']['arm']:g}): {calls}. The pool's PUT; azure-core's poller backing "
            "off from ARM's Retry-After (1 s here: it waits 1, 2, 4, ... s, up to 30 s, and does "
            "not ask straight after the PUT); its final GET, whose answer is the pool the "
            "reconciler reads (no GET of its own while the operation runs, none when it has "
            "ended); the poller's end queues the workspace. A second agentPools.get comes when "
            "the pool's node has not shown Ready in the cluster by then. The status patches "
            f"({_per_ws(aks, 'patch workspaces/status'):.1f} per workspace) are mostly the "
            "progress message, which carries the seconds elapsed and so changes on each "
            "reconcile that lands in a new second.",
        ]
    return out


def render(results: list[dict]) -> Section:
    """The section from the runs' raw results (also re-rendered from control_plane_runs.json)."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in results:
        groups.setdefault((r["provisioner"], r["n"]), []).append(r)
    summaries = [_summary(rows) for rows in groups.values()]

    rows = [
        [
            s["provisioner"],
            s["n"],
            s["created_p50"],
            s["created_p95"],
            s["ready_p50"],
            s["ready_p95"],
            f"{s['all_ready_s']:.1f} ({s['all_ready_runs']}/{s['runs']} runs)",
            s["apply_s"],
            s["writes"],
            s["arm"],
            s["requeues"],
            s["reconciles"],
            s["cpu_s"],
            s["rss_mb"],
        ]
        for s in summaries
    ]
    largest = {
        p: max((s for s in summaries if s["provisioner"] == p), key=lambda s: s["n"], default=None)
        for p in ("byo", "aks")
    }
    breakdown = []
    for p, s in largest.items():
        if s is None:
            continue
        items = sorted(s["writes_by"].items(), key=lambda kv: -kv[1])
        breakdown.append(
            f"- {p}, {s['n']} workspaces (one run): API writes "
            + ", ".join(f"{k} {v}" for k, v in items)
            + (
                "; ARM calls "
                + ", ".join(
                    f"{k} {v}" for k, v in sorted(s["arm_by"].items(), key=lambda kv: -kv[1])
                )
                if s["arm_by"]
                else ""
            )
        )
    sizes_run = sorted({s["n"] for s in summaries})
    body = [
        "Each run: a fresh namespace, fresh KWOK GPU nodes, one per workspace and selected by a label "
        "of its own as in Kaito's README (byo: made and Ready before the apply; aks: the "
        "simulated ARM makes one pool per workspace, 1 s to provision, with a `Retry-After` of 1 s "
        "on its operations), and a fresh `kaito controller --backend kubernetes --namespace NS` "
        "subprocess, then every workspace in one `apply` (inference and tuning alternating; one "
        "workspace is inference). Times are medians over runs of each run's p50/p95 across its "
        "workspaces. *Created*: from the workspace appearing on a watch to its workload "
        "(Deployment or Job) and Service appearing on the same watch. *Ready*: from the apply "
        "call to InferenceReady (inference) or WorkspaceSucceeded (tuning; KWOK ends the tuning "
        "pod after 1 s). *Writes*: the API server's audit log, every create/update/patch/delete "
        "the reconciler sent (Lease renewals and Events included), per workspace. *ARM calls*: the "
        "simulator's request log, per workspace, without the Entra token requests (shown in the "
        "breakdown). *Requeues*: "
        "reconciles that asked to look again later (the reconciler's own count, printed when it "
        "stops). CPU: the reconciler process's user+system seconds from apply to all ready + "
        f"{SETTLE_SECONDS:g} s; peak RSS: its VmHWM.",
        "",
        table(
            [
                "provisioner",
                "workspaces",
                "created p50 (s)",
                "created p95 (s)",
                "ready p50 (s)",
                "ready p95 (s)",
                "all ready (s)",
                "apply call (s)",
                "API writes / ws",
                "ARM calls / ws",
                "requeues / ws",
                "reconciles / ws",
                "reconciler CPU (s)",
                "peak RSS (MB)",
            ],
            rows,
        ),
        "",
        *breakdown,
        "",
        *_where_the_time_goes({(x["provisioner"], x["n"]): x for x in summaries}),
        "",
        "The aks rows include the simulator's 1 s of provisioning and the polls of its "
        "operations; real AKS "
        "takes minutes to make a GPU pool, so there the ready time is AKS's, not ours.",
        "",
        "**Kaito beside it.** Kaito's workspace controller requeues every 2 s while it waits for "
        "nodes, and its e2e tests poll every 2 s; its published e2e numbers come from real AKS "
        "clusters with real GPU nodes (minutes of VM provisioning and image pulls), so they are "
        "not reproducible on this bed and no Kaito row is shown. Ours is event-driven: a change "
        "of a node it concerns, of its pods or objects, or the end of its pool's ARM operation "
        "queues the workspace at once; the aks provisioner looks again every 5 s while a pool "
        "provisions only as a backstop.",
        "",
        "The machine (2 cores) was shared with other engineers' builds and tests while this ran: "
        "the API server, etcd, KWOK, the simulator, the reconciler and this watcher all compete "
        "for those cores, so the times are upper bounds.",
    ]
    if 200 not in {s["n"] for s in summaries if s["provisioner"] == "aks"}:
        body += ["", LEFT_200_AKS]
    if 200 not in {s["n"] for s in summaries if s["provisioner"] == "byo"}:
        body += ["", LEFT_200_BYO]

    by = {(s["provisioner"], s["n"]): s for s in summaries}
    goals = []
    byo_sizes = sorted(n for p, n in by if p == "byo")
    if byo_sizes:
        sized = [by[("byo", n)] for n in byo_sizes]
        goals.append(
            Goal(
                name="apply -> all objects, p50 (byo; every size run)",
                target=f"<= {GOAL_CREATE_P50} s",
                measured=", ".join(f"{x['created_p50']:.2f} s at {x['n']}" for x in sized)
                + " (the workspaces arriving over the apply call, about "
                f"{max((x['n'] / x['apply_s'] for x in sized if x['apply_s'] and x['n'] > 1), default=0):.0f} a second; a "
                "tighter burst is slower, see the section)",
                met=all(x["created_p50"] <= GOAL_CREATE_P50 for x in sized),
            )
        )
    big = by.get(("byo", 200))
    goals.append(
        Goal(
            name="200 workspaces all ready (byo)",
            target=f"<= {GOAL_ALL_READY:g} s",
            measured=f"{big['all_ready_s']:.1f} s" if big else _not_run_200(by, sizes_run),
            met=bool(big) and big["all_ready_s"] <= GOAL_ALL_READY,
        )
    )
    worst_writes = max(summaries, key=lambda s: s["writes"])
    goals.append(
        Goal(
            name="API writes per workspace (worst case)",
            target=f"<= {GOAL_WRITES}",
            measured=f"{worst_writes['writes']:.1f} ({worst_writes['provisioner']}, {worst_writes['n']})",
            met=worst_writes["writes"] <= GOAL_WRITES,
        )
    )
    aks = [s for s in summaries if s["provisioner"] == "aks"]
    if aks:
        worst_arm = max(aks, key=lambda s: s["arm"])
        goals.append(
            Goal(
                name="ARM calls per workspace (worst case)",
                target=f"<= {GOAL_ARM}",
                measured=f"{worst_arm['arm']:.1f} (aks, {worst_arm['n']})",
                met=worst_arm["arm"] <= GOAL_ARM,
            )
        )
    worst_rss = max(summaries, key=lambda s: s["rss_mb"])
    goals.append(
        Goal(
            name="reconciler peak RSS",
            target=f"<= {GOAL_RSS_MB} MB",
            measured=f"{worst_rss['rss_mb']:.0f} MB ({worst_rss['provisioner']}, {worst_rss['n']})",
            met=worst_rss["rss_mb"] <= GOAL_RSS_MB,
        )
    )
    return Section(
        name="control_plane",
        title=TITLE,
        markdown="\n".join(body),
        goals=goals,
        commands=["python -m tests.testbed build", "python -m benchmarks --only control_plane"],
    )
