"""etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK on loopback.

Every listener is bound to 127.0.0.1 on a free port (the programs' defaults bind every
interface, on fixed ports), and every file a program writes lives in the bed's directory.
"""

from __future__ import annotations

import os
import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kaito_jupyter.runtimes.local_server import LOOPBACK, free_port

from tests.testbed import credentials, kubeconfig, kwok_stages
from tests.testbed.processes import Program, Supervisor, wait_until

# Nothing is routed: the API server only allocates ClusterIPs from SERVICE_CIDR. Node and pod
# IPs, which code may dial, are loopback addresses so that a stray connection stays on this
# machine (the price: EndpointSlices reject loopback endpoints, so Services get none).
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "127.64.0.0/16"
NODE_IP = "127.0.0.1"
ISSUER = "https://kubernetes.default.svc.cluster.local"
# KWOK manages the nodes that carry this annotation, and leaves any other node alone.
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")


@dataclass
class Endpoints:
    server: str
    kubeconfig: Path
    ca_file: Path
    token: str


class ControlPlane:
    """Starts the five programs in dependency order; `stop()` (via the supervisor) ends them."""

    def __init__(
        self,
        bin_dir: Path,
        workdir: Path,
        supervisor: Supervisor,
        apiserver_args: list[str] = (),
    ):
        self.bin = bin_dir
        self.apiserver_args = list(apiserver_args)  # e.g. an audit policy, for benchmarks
        self.dir = workdir
        self.supervisor = supervisor
        self.programs: dict[str, Program] = {}
        self.creds: credentials.Credentials | None = None
        self.endpoints: Endpoints | None = None
        self.timings: dict[str, float] = {}

    def start(self, timeout: float = 90) -> Endpoints:
        started = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.creds = credentials.create(self.dir / "pki")
        self._start_etcd(timeout)
        self._mark("etcd", started)
        self._start_apiserver(timeout)
        self._mark("kube-apiserver", started)
        # The two controllers and KWOK only need the API server: start them together.
        kcm_port = self._start_controller_manager()
        scheduler_port = self._start_scheduler()
        self._start_kwok()
        for name, port in (
            ("kube-controller-manager", kcm_port),
            ("kube-scheduler", scheduler_port),
        ):
            wait_until(
                lambda port=port: _https_ok(f"https://{LOOPBACK}:{port}/healthz"),
                timeout=timeout,
                what=name,
                programs=[self.programs[name]],
            )
            self._mark(name, started)
        return self.endpoints

    def check_running(self) -> None:
        for program in self.programs.values():
            program.check_running()

    def _mark(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 2)

    def _binary(self, name: str) -> str:
        return str(self.bin / name)

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Program:
        program = self.supervisor.start(name, argv, env=env)
        self.programs[name] = program
        return program

    def _start_etcd(self, timeout: float) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://{LOOPBACK}:{client}"
        program = self._start(
            "etcd",
            [
                self._binary("etcd"),
                "--name=testbed",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://{LOOPBACK}:{peer}",
                f"--initial-advertise-peer-urls=http://{LOOPBACK}:{peer}",
                f"--initial-cluster=testbed=http://{LOOPBACK}:{peer}",
                # A throwaway store: durability only costs time here.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        wait_until(
            lambda: _http_ok(f"{self.etcd_url}/health"),
            timeout=timeout,
            what="etcd",
            programs=[program],
        )

    def _start_apiserver(self, timeout: float) -> None:
        creds = self.creds
        port = free_port()
        server = f"https://{LOOPBACK}:{port}"
        program = self._start(
            "kube-apiserver",
            [
                self._binary("kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                # The `kubernetes` Service's endpoints would be the loopback address, which the
                # endpoint reconciler refuses; nothing in the bed dials that Service.
                "--endpoint-reconciler-type=none",
                f"--secure-port={port}",
                f"--cert-dir={self.dir / 'kube-apiserver'}",
                f"--tls-cert-file={creds.serving_cert}",
                f"--tls-private-key-file={creds.serving_key}",
                f"--client-ca-file={creds.ca_file}",
                f"--token-auth-file={creds.token_file}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={creds.sa_public_key}",
                f"--service-account-signing-key-file={creds.sa_private_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # PodTemplates (which nothing in the bed uses) bypass the watch cache, so a
                # watch from a resourceVersion etcd has compacted gets a real 410 Gone.
                "--watch-cache-sizes=podtemplates#0",
                "--profiling=false",
                "--v=0",
                *self.apiserver_args,
            ],
        )
        admin = kubeconfig.write(
            self.dir / "kubeconfig", server, creds.ca_pem(), creds.tokens["admin"]
        )
        self.endpoints = Endpoints(server, admin, creds.ca_file, creds.tokens["admin"])
        for identity in ("controller-manager", "scheduler", "kwok", "arm"):
            kubeconfig.write(
                self.dir / f"{identity}.kubeconfig",
                server,
                creds.ca_pem(),
                creds.tokens[identity],
                user=identity,
            )
        context = ssl.create_default_context(cafile=str(creds.ca_file))
        wait_until(
            lambda: _https_ok(f"{server}/readyz", context, creds.tokens["admin"]),
            timeout=timeout,
            what="kube-apiserver",
            programs=[program, self.programs["etcd"]],
        )

    def _start_controller_manager(self) -> int:
        creds = self.creds
        port = free_port()
        config = str(self.dir / "controller-manager.kubeconfig")
        self._start(
            "kube-controller-manager",
            [
                self._binary("kube-controller-manager"),
                f"--kubeconfig={config}",
                f"--authentication-kubeconfig={config}",
                f"--authorization-kubeconfig={config}",
                # No front proxy here: don't look for its CA in kube-system (and log that).
                "--authentication-skip-lookup",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={port}",
                f"--cert-dir={self.dir / 'kube-controller-manager'}",
                # Each controller runs as its own service account, as kubeadm sets it up.
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={creds.sa_private_key}",
                f"--root-ca-file={creds.ca_file}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=0",
            ],
        )
        return port

    def _start_scheduler(self) -> int:
        port = free_port()
        config = str(self.dir / "scheduler.kubeconfig")
        self._start(
            "kube-scheduler",
            [
                self._binary("kube-scheduler"),
                f"--kubeconfig={config}",
                f"--authentication-kubeconfig={config}",
                f"--authorization-kubeconfig={config}",
                # No front proxy here: don't look for its CA in kube-system (and log that).
                "--authentication-skip-lookup",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={port}",
                f"--cert-dir={self.dir / 'kube-scheduler'}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=0",
            ],
        )
        return port

    def _start_kwok(self) -> None:
        config = kwok_stages.write(self.dir / "kwok.yaml")
        key, value = KWOK_NODE_ANNOTATION
        kwok_home = self.dir / "kwok-home"
        kwok_home.mkdir(exist_ok=True)
        self._start(
            "kwok",
            [
                self._binary("kwok"),
                f"--kubeconfig={self.dir / 'kwok.kubeconfig'}",
                f"--config={config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={key}={value}",
                # Kubelets renew a Lease; the node lifecycle controller reads it as heartbeat.
                "--node-lease-duration-seconds=40",
                f"--cidr={POD_CIDR}",
                f"--node-ip={NODE_IP}",
            ],
            # kwok also reads ~/.kwok/kwok.yaml when present; give it a home of its own.
            env={**os.environ, "HOME": str(kwok_home)},
        )


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def _https_ok(url: str, context: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    if context is None:
        # The controllers serve health checks on self-signed certificates they make at start.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=2, context=context) as response:
        return response.status == 200
