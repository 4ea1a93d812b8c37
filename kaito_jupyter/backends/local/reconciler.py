"""The local reconciler: level-triggered, one pass over every workspace in the store.

For each workspace it plans (controller/plan.py, the same Plan the Kubernetes backend renders),
starts or adopts or restarts or stops the runtime process that Plan asks for (supervisor.py),
and writes the conditions controller/status.py derives from what it saw: the same conditions
the Kubernetes backend writes. Nothing here decides a condition on its own.

Runtime rows (the `runtimes` table) record what was started: pid, process start time, token,
port, spec hash, restarts. They are what a new leader adopts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaito_jupyter import config
from kaito_jupyter.api import conditions as c
from kaito_jupyter.api import image_reference
from kaito_jupyter.api.wire import StoredWorkspace
from kaito_jupyter.controller import status as st
from kaito_jupyter.controller.plan import Plan, PlanError, plan
from kaito_jupyter.provisioners.base import NodeRequest
from kaito_jupyter.provisioners.local import LocalProvisioner
from kaito_jupyter.runtimes.local_server import free_port

from . import config_maps, paths, supervisor
from .backend import LocalBackend, host_path
from .image_store import ImageStore

HEALTH_READY_S = 5.0
# A killed tuning job is retried (resuming its checkpoints), as a Job's backoffLimit.
TUNING_ATTEMPTS = 3


@dataclass
class Outcome:
    """What one pass did for a workspace (for the controller's log and tests)."""

    key: tuple[str, str]
    action: str = ""


class Reconciler:
    def __init__(self, backend: LocalBackend, *, log=None, threads: int | None = None):
        self.backend = backend
        self.store = backend.store
        self.root = backend.root
        self.provisioner = LocalProvisioner()
        self.images = ImageStore(paths.oci_layout(self.root))
        self.children: dict[int, subprocess.Popen] = {}
        self.seen: set[tuple[str, str]] = set()  # runtimes this process has checked once
        self.health_checked: dict[tuple[str, str], float] = {}
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.threads = threads
        self.settings = backend.settings

    # ------------------------------------------------------------------ the pass

    def reconcile_all(self) -> list[Outcome]:
        self._reap()
        outcomes = []
        live = set()
        for stored in self.backend.list():
            key = (stored.namespace, stored.name)
            live.add(key)
            try:
                outcomes.append(self.reconcile(stored))
            except Exception as exc:  # one broken workspace must not stop the others
                self.log(f"reconcile {key[0]}/{key[1]} failed: {type(exc).__name__}: {exc}")
                self.backend.record_event(
                    *key, "Warning", "ReconcileError", f"{type(exc).__name__}: {exc}"
                )
        for key, row in self.store.runtimes().items():
            if key not in live:  # its workspace vanished without us: nothing may keep running
                self._stop(key, row, why="its workspace is gone")
        return outcomes

    def reconcile(self, stored: StoredWorkspace) -> Outcome:
        key = (stored.namespace, stored.name)
        ws = stored.workspace
        if stored.deleting:
            return self._delete(stored)
        mode = "tuning" if ws.tuning is not None else "inference"
        try:
            planned = plan(ws, local=True)
        except PlanError as exc:
            return self._invalid(stored, mode, exc.reason, exc.message)
        problems = [i for i in self.backend.admission_issues(stored.data) if i.severity == "error"]
        if problems:
            message = "; ".join(f"{i.path}: {i.message}" for i in problems)
            return self._invalid(stored, mode, "WorkspaceInvalid", message)
        nodes = self.provisioner.ensure(
            NodeRequest(
                namespace=key[0],
                name=key[1],
                uid=str(stored.metadata.get("uid") or ""),
                instance_type=planned.instance_type,
                count=1,
            )
        )
        if mode == "inference":
            workload = self._inference(stored, planned)
            established = stored.status.state in (c.STATE_READY, c.STATE_NOT_READY)
            derived = st.derive_inference(nodes, workload, established=established)
        else:
            workload = self._tuning(stored, planned)
            derived = st.derive_tuning(nodes, workload)
        self._write(stored, derived)
        return Outcome(key, "reconciled")

    def _write(self, stored: StoredWorkspace, derived: st.Derived) -> None:
        status, changed = st.write(stored.data.get("status"), derived, generation=stored.generation)
        if changed:
            self.backend.write_status(stored.namespace, stored.name, status)

    def _invalid(self, stored: StoredWorkspace, mode: str, reason: str, message: str) -> Outcome:
        """A workspace that cannot run as written: nothing is started (what ran is stopped)."""
        key = (stored.namespace, stored.name)
        row = self.store.runtime(*key)
        if row is not None:
            self._stop(key, row, why="the workspace became invalid")
        before = stored.workspace.condition(c.WORKSPACE_SUCCEEDED)
        if not before or before.reason != reason or before.message != message:
            self.backend.record_event(*key, "Warning", reason, message)
        self._write(stored, st.derive_invalid(mode, reason, message))
        return Outcome(key, "invalid")

    def _delete(self, stored: StoredWorkspace) -> Outcome:
        key = (stored.namespace, stored.name)
        self._write(stored, st.derive_deleting())
        row = self.store.runtime(*key)
        if row is not None:
            self._stop(key, row, why="the workspace is being deleted")
        supervisor.remove_logs(paths.log_path(self.root, *key))
        # A tuning job's work directory (its adapter is in the image store or the user's
        # hostPath by now); never the user's own output directory.
        shutil.rmtree(self.root / "tuning" / f"{key[0]}.{key[1]}", ignore_errors=True)
        self.backend.finalize(*key)
        self.log(f"deleted {key[0]}/{key[1]}")
        return Outcome(key, "deleted")

    # ------------------------------------------------------------------ inference

    def _inference(self, stored: StoredWorkspace, planned: Plan) -> st.WorkloadReport:
        key = (stored.namespace, stored.name)
        row = self.store.runtime(*key)
        try:
            sources = self._adapter_sources(stored, planned)
        except LookupError as exc:
            if row is not None:
                self._stop(key, row, why="an adapter cannot be found")
            return st.WorkloadReport(
                exists=False, desired=1, problems=(st.Problem(st.IMAGE_PULL_ERROR, str(exc)),)
            )
        wanted = planned.spec_hash
        if row is not None and row.get("spec_hash") != wanted:
            self._stop(key, row, why="the spec changed")
            row = None
        if row is None:
            self._start_inference(key, planned, sources, restarts=0)
            return st.WorkloadReport(exists=True, desired=1, ready=0)
        return self._supervise(key, row, planned, sources)

    def _supervise(self, key, row: dict, planned: Plan, sources: dict) -> st.WorkloadReport:
        now = time.time()
        log = Path(row["log"])
        if row.get("state") == "running" and supervisor.is_ours(
            row["pid"], row["pid_start"], row["token"]
        ):
            if key not in self.seen and row["pid"] not in self.children:
                self.backend.record_event(
                    *key, "Normal", "Adopted", f"adopted the running inference server (pid {row['pid']}, port {row['port']})"
                )  # fmt: skip
            self.seen.add(key)
            supervisor.rotate(log)
            healthy = self._healthy(key, row, now)
            if healthy != bool(row.get("ready")):
                row["ready"] = healthy
                if healthy:
                    row["ready_since"] = now
                    self.backend.record_event(
                        *key,
                        "Normal",
                        "Ready",
                        f"inference server ready on 127.0.0.1:{row['port']}",
                    )
                self.store.put_runtime(*key, row)
            if (
                healthy
                and row.get("restarts")
                and now - row.get("ready_since", now) > supervisor.BACKOFF_RESET_S
            ):
                row["restarts"] = 0
                self.store.put_runtime(*key, row)
            return st.WorkloadReport(exists=True, desired=1, ready=1 if healthy else 0)
        self.seen.add(key)
        if row.get("state") == "running":  # it exited (or was killed): back off, then restart
            row["state"] = "backoff"
            row["ready"] = False
            row["restarts"] = int(row.get("restarts") or 0) + 1
            row["last_exit"] = self._exit_text(row["pid"])
            delay = supervisor.backoff(row["restarts"])
            row["backoff_until"] = now + delay
            self.store.put_runtime(*key, row)
            self.backend.record_event(
                *key, "Warning", "BackOff",
                f"the inference server {row['last_exit']}; restarting in {delay:g} s "
                f"(restart {row['restarts']})",
            )  # fmt: skip
        if now >= float(row.get("backoff_until") or 0):
            self._start_inference(key, planned, sources, restarts=int(row.get("restarts") or 0))
            return st.WorkloadReport(exists=True, desired=1, ready=0)
        last = supervisor.tail(log, 3).replace("\n", " | ")
        message = (
            f"back-off restarting the inference server: it {row.get('last_exit', 'exited')} "
            f"({row.get('restarts', 1)} restart(s)){f'; last log: {last}' if last else ''}"
        )
        return st.WorkloadReport(
            exists=True, desired=1, ready=0, problems=(st.Problem(st.CRASH_LOOP, message),)
        )

    def _healthy(self, key, row: dict, now: float) -> bool:
        """/health every pass until ready, then every HEALTH_READY_S (its access log is the
        runtime's; a dead process is seen at once by its pid either way)."""
        last = self.health_checked.get(key)
        if row.get("ready") and last is not None and now - last < HEALTH_READY_S:
            return True
        self.health_checked[key] = now
        return supervisor.health(row["port"], row["token"])

    def _start_inference(self, key, planned: Plan, sources: dict, *, restarts: int) -> None:
        port = free_port()
        command = [
            sys.executable, "-m", "kaito_jupyter.runtimes.inference",
            *planned.inference_args(sources),
            "--host", "127.0.0.1", "--port", str(port), "--drain-timeout", "5",
        ]  # fmt: skip
        if self.threads:
            command += ["--threads", str(self.threads)]
        log = paths.log_path(self.root, *key)
        started, process = supervisor.start(command, env=self._env(), log=log)
        self.children[started.pid] = process
        self.seen.add(key)
        row = {
            "kind": "inference", "pid": started.pid, "pid_start": started.pid_start,
            "token": started.token, "port": port, "spec_hash": planned.spec_hash,
            "model": planned.served_name, "log": str(log), "restarts": restarts,
            "started": time.time(), "state": "running", "ready": False,
        }  # fmt: skip
        self.store.put_runtime(*key, row)
        what = f"restart {restarts}" if restarts else "started"
        self.backend.record_event(
            *key, "Normal", "Started",
            f"inference server {what}: pid {started.pid}, 127.0.0.1:{port}, preset {planned.served_name}",
        )  # fmt: skip
        self.log(f"{key[0]}/{key[1]}: inference server {what} (pid {started.pid}, port {port})")

    def _adapter_sources(self, stored: StoredWorkspace, planned: Plan) -> dict[str, str]:
        """Where the runtime finds each adapter: a hostPath directory, an image unpacked from
        the local image store (resolved first), or the image reference for the runtime to pull."""
        out: dict[str, str] = {}
        specs = (stored.workspace.inference.adapters or []) if stored.workspace.inference else []
        for adapter, spec in zip(planned.adapters, specs, strict=False):
            volume = host_path(spec.source.volume if spec.source else None)
            if volume:
                if not Path(volume).is_dir():
                    raise LookupError(f"adapter {adapter.name}: directory {volume} does not exist")
                out[adapter.name] = volume
                continue
            image = adapter.source
            if self.images.find(image):
                out[adapter.name] = str(self.images.extract_adapter(image, self.root / "adapters"))
            elif self._registry_allowed(image):
                out[adapter.name] = image
            else:
                raise LookupError(
                    f"adapter {adapter.name}: image {image} is not in the local image store "
                    f"({self.images.root}) and names no loopback or configured registry; run the "
                    "tuning workspace that outputs it first"
                )
        return out

    def _registry_allowed(self, image: str) -> bool:
        """A registry we may reach from here: loopback, or listed in allowed_private_registries."""
        try:
            registry = image_reference.split(image.removeprefix("oci://")).registry
        except image_reference.BadReference:
            return False
        if registry is None:
            return False
        host = registry.rsplit(":", 1)[0].strip("[]") if not registry.startswith("[") else registry
        allowed = set(config.load().allowed_private_registries)
        if registry in allowed or host in allowed:
            return True
        import ipaddress

        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            return False

    # ------------------------------------------------------------------ tuning

    def _tuning(self, stored: StoredWorkspace, planned: Plan) -> st.WorkloadReport:
        key = (stored.namespace, stored.name)
        row = self.store.runtime(*key)
        if row is not None and row.get("state") == "succeeded":
            return st.WorkloadReport(
                exists=True, started=True, succeeded=True, message=row.get("message", "")
            )
        if row is not None and row.get("state") == "failed":
            return st.WorkloadReport(
                exists=True, failed=True, message=row.get("message", ""),
                problems=(st.Problem(row.get("reason", "WorkspaceTuningJobStatusFailed"), row.get("message", "")),),
            )  # fmt: skip
        if row is None:
            try:
                job = self._tuning_job(stored, planned)
            except LookupError as exc:
                return st.WorkloadReport(
                    exists=False, problems=(st.Problem("InvalidTuningInput", str(exc)),)
                )
            self._start_tuning(key, job, attempts=0, fresh=True)
            return st.WorkloadReport(exists=True, started=True, message="tuning job started")
        progress = Path(row["progress"])
        if row.get("state") == "running" and supervisor.is_ours(
            row["pid"], row["pid_start"], row["token"]
        ):
            if key not in self.seen and row["pid"] not in self.children:
                self.backend.record_event(
                    *key, "Normal", "Adopted", f"adopted the running tuning job (pid {row['pid']})"
                )
            self.seen.add(key)
            supervisor.rotate(Path(row["log"]))
            return st.WorkloadReport(exists=True, started=True, message=_progress_text(progress))
        self.seen.add(key)
        last = _last_outcome(progress)
        if row.get("state") == "running" and last is not None and last.get("event") == "completed":
            return self._tuning_done(key, row, last)
        if row.get("state") == "running" and last is not None and last.get("event") == "failed":
            row.update(state="failed", reason=last.get("reason") or "TuningFailed",
                       message=last.get("message") or "the tuning job failed")  # fmt: skip
            self.store.put_runtime(*key, row)
            self.backend.record_event(*key, "Warning", row["reason"], row["message"])
            return self._tuning(stored, planned)
        if row.get("state") == "running":  # killed without a word: retry, resuming its checkpoints
            attempts = int(row.get("attempts") or 0) + 1
            exit_text = self._exit_text(row["pid"])
            if attempts >= TUNING_ATTEMPTS:
                row.update(state="failed", reason="BackoffLimitExceeded",
                           message=f"the tuning job {exit_text}, {attempts} times")  # fmt: skip
                self.store.put_runtime(*key, row)
                self.backend.record_event(*key, "Warning", row["reason"], row["message"])
                return self._tuning(stored, planned)
            delay = supervisor.backoff(attempts)
            row.update(state="backoff", attempts=attempts, backoff_until=time.time() + delay,
                       last_exit=exit_text)  # fmt: skip
            self.store.put_runtime(*key, row)
            self.backend.record_event(
                *key, "Warning", "BackOff", f"the tuning job {exit_text}; retrying in {delay:g} s"
            )
        if time.time() >= float(row.get("backoff_until") or 0):
            self._start_tuning(key, row["job"], attempts=int(row.get("attempts") or 0), fresh=False)
        return st.WorkloadReport(
            exists=True,
            started=True,
            message=f"retrying: the tuning job {row.get('last_exit', 'exited')}",
        )

    def _tuning_job(self, stored: StoredWorkspace, planned: Plan) -> dict[str, Any]:
        """The job's command-line inputs and output, resolved for this machine."""
        key = (stored.namespace, stored.name)
        t = planned.tuning
        assert t is not None
        work = self.root / "tuning" / f"{key[0]}.{key[1]}"
        inputs = list(t.input_urls)
        if t.input_image:
            inputs.append(t.input_image)
        volume = host_path(t.input_volume)
        if volume:
            if not Path(volume).exists():
                raise LookupError(f"tuning.input: {volume} does not exist on this machine")
            inputs.append(volume)
        job: dict[str, Any] = {"inputs": inputs, "work": str(work), "preset": planned.served_name}
        out_dir = host_path(t.output_volume)
        if out_dir:
            job["output"] = out_dir
        elif t.output_image and self._registry_allowed(t.output_image):
            job["output"] = t.output_image  # the job pushes it (loopback or configured registry)
            job["push"] = True
        else:
            job["output"] = str(work / "adapter")
            job["local_image"] = t.output_image
        if t.config:
            found = config_maps.path(self.root, t.config)
            if not found.is_file():
                raise LookupError(
                    f"tuning.config: ConfigMap {t.config} not found; locally it is the file "
                    f"{found} (kaito_jupyter.backends.local.config_maps.save writes it)"
                )
            job["config"] = str(found)
        job["args"] = planned.tuning_args(inputs=inputs, output=job["output"])
        return job

    def _start_tuning(self, key, job: dict, *, attempts: int, fresh: bool) -> None:
        work = Path(job["work"])
        work.mkdir(parents=True, exist_ok=True)
        progress = work / "progress.jsonl"
        if fresh:
            progress.unlink(missing_ok=True)
        command = [sys.executable, "-m", "kaito_jupyter.runtimes.tuning", *job["args"],
                   "--progress-file", str(progress)]  # fmt: skip
        if job.get("push"):  # a directory output is the job's work dir; an image needs one
            command += ["--work-dir", str(work / "job")]
        if job.get("config"):
            command += ["--config", job["config"]]
        if self.threads:
            command += ["--threads", str(self.threads)]
        log = paths.log_path(self.root, *key)
        env = self._env()
        env["KAITO_TERMINATION_LOG"] = str(work / "termination-log")
        started, process = supervisor.start(command, env=env, log=log)
        self.children[started.pid] = process
        self.seen.add(key)
        row = {
            "kind": "tuning", "pid": started.pid, "pid_start": started.pid_start,
            "token": started.token, "log": str(log), "progress": str(progress), "job": job,
            "attempts": attempts, "started": time.time(), "state": "running",
        }  # fmt: skip
        self.store.put_runtime(*key, row)
        self.backend.record_event(
            *key, "Normal", "Started", f"tuning job started: pid {started.pid}"
        )
        self.log(f"{key[0]}/{key[1]}: tuning job started (pid {started.pid})")

    def _tuning_done(self, key, row: dict, last: dict) -> st.WorkloadReport:
        job = row["job"]
        where = job["output"]
        if job.get("local_image"):
            adapter = Path(last.get("adapter") or job["output"])
            digest = self.images.put_adapter(job["local_image"], adapter, preset=job.get("preset"))
            where = f"{job['local_image']} (local image store, {digest[:19]})"
        steps = last.get("steps")
        loss = last.get("loss")
        message = f"adapter written to {where}" + (
            f" after {steps} steps, loss {loss:.4g}"
            if isinstance(loss, int | float) and steps
            else ""
        )
        row.update(state="succeeded", message=message)
        self.store.put_runtime(*key, row)
        self.backend.record_event(*key, "Normal", "Completed", message)
        return st.WorkloadReport(exists=True, started=True, succeeded=True, message=message)

    # ------------------------------------------------------------------ processes

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Two cores shared by everyone: OpenMP threads sleep when idle instead of spinning.
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        env.setdefault("OMP_NUM_THREADS", str(self.threads or 1))
        env.pop(supervisor.TOKEN_ENV, None)
        return env

    def _exit_text(self, pid: int) -> str:
        process = self.children.pop(pid, None)
        if process is None:
            return "exited"
        code = process.wait(timeout=5)
        if code < 0:
            return f"was killed by signal {-code}"
        return f"exited with code {code}"

    def _stop(self, key, row: dict, *, why: str) -> None:
        if row.get("pid") and row.get("state") == "running":
            self.log(f"{key[0]}/{key[1]}: stopping pid {row['pid']} ({why})")
            if supervisor.is_ours(row["pid"], row["pid_start"], row["token"]):
                supervisor.stop(row["pid"], row["pid_start"])
                self.backend.record_event(
                    *key, "Normal", "Killing", f"stopped pid {row['pid']}: {why}"
                )
            self.children.pop(row["pid"], None)
        self.store.drop_runtime(*key)
        self.seen.discard(key)

    def _reap(self) -> None:
        for process in self.children.values():
            process.poll()


def _events(progress: Path) -> list[dict]:
    try:
        lines = progress.read_text(errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _last_outcome(progress: Path) -> dict | None:
    for event in reversed(_events(progress)):
        if event.get("event") in ("completed", "failed"):
            return event
        if event.get("event") == "started":
            return None
    return None


def _progress_text(progress: Path) -> str:
    for event in reversed(_events(progress)):
        if event.get("event") == "step":
            parts = [f"step {event.get('step')}/{event.get('total_steps')}"]
            if isinstance(event.get("loss"), int | float):
                parts.append(f"loss {event['loss']:.4g}")
            if isinstance(event.get("eta_seconds"), int | float):
                parts.append(f"ETA {event['eta_seconds']:.0f} s")
            return "tuning: " + ", ".join(parts)
    return "workspace has not completed yet, tuning job is running"
