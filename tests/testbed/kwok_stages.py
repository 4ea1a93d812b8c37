"""KWOK Stages: how the simulated kubelets move nodes and pods through their lives.

KWOK has no built-in behaviour; each Stage selects objects (jq over the object) and patches
their status after a delay. These are the bed's own:

- node-ready: a GPU node KWOK manages reports Ready, with its addresses and node info;
- pod-running: a scheduled pod starts and becomes Ready (after `ready-after`, if set);
- job-pod-exit: a Job's running pod terminates after `run-for` (default 1 s) with
  `exit-code` (default 0): 0 gives phase Succeeded, anything else Failed, so a test can make a
  tuning Job succeed or fail;
- pod-delete: a terminating pod goes away, as the kubelet would confirm it.

The pod behaviour is steered by annotations on the pod (on a Job, on its pod template):
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.testbed import versions

ANNOTATION_PREFIX = "testbed.kaito-jupyter/"
# A Go duration ("1.5s", "2m") before a scheduled pod turns Running and Ready.
READY_AFTER = ANNOTATION_PREFIX + "ready-after"
# A Go duration a Job's pod runs before it exits.
RUN_FOR = ANNOTATION_PREFIX + "run-for"
# The exit code of every container of a Job's pod when it exits.
EXIT_CODE = ANNOTATION_PREFIX + "exit-code"

_NODE_READY = """\
{{ $now := Now }}
conditions:
{{ range NodeConditions }}
- type: {{ .type | Quote }}
  status: {{ .status | Quote }}
  reason: {{ .reason | Quote }}
  message: {{ .message | Quote }}
  lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
{{ end }}
addresses:
- type: InternalIP
  address: {{ NodeIP | Quote }}
- type: Hostname
  address: {{ .metadata.name | Quote }}
nodeInfo:
  architecture: amd64
  operatingSystem: linux
  osImage: "KWOK simulated node"
  kernelVersion: {{ printf "kwok-%s" Version | Quote }}
  kubeletVersion: "KUBELET_VERSION"
  kubeProxyVersion: ""
  containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
  machineID: ""
  systemUUID: ""
  bootID: ""
phase: Running
"""

_NODE_READY = _NODE_READY.replace("KUBELET_VERSION", versions.KUBERNETES)

_POD_RUNNING = """\
{{ $now := Now }}
conditions:
- type: PodReadyToStartContainers
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: Initialized
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: ContainersReady
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: Ready
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
{{ range .spec.readinessGates }}
- type: {{ .conditionType | Quote }}
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
{{ end }}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  imageID: ""
  ready: true
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
{{ with .spec.initContainers }}
initContainerStatuses:
{{ range . }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  imageID: ""
  restartCount: 0
{{ if eq ( or .restartPolicy "" ) "Always" }}
  ready: true
  started: true
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ else }}
  ready: true
  state:
    terminated:
      exitCode: 0
      reason: Completed
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}
{{ end }}
{{ end }}
{{ end }}
{{ with NodeIPsWith .spec.nodeName }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
{{ $hostNetwork := or .spec.hostNetwork false }}
{{ with PodIPsWith .spec.nodeName $hostNetwork .metadata.uid .metadata.name .metadata.namespace }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""

_JOB_POD_EXIT = (
    """\
{{ $now := Now }}
{{ $code := "0" }}
{{ with .metadata.annotations }}{{ $code = or ( index . "EXIT_CODE" ) "0" }}{{ end }}
{{ $failed := ne $code "0" }}
{{ $started := or .status.startTime $now }}
conditions:
- type: Ready
  status: "False"
  reason: PodCompleted
  lastTransitionTime: {{ $now | Quote }}
- type: ContainersReady
  status: "False"
  reason: PodCompleted
  lastTransitionTime: {{ $now | Quote }}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  imageID: ""
  ready: false
  started: false
  restartCount: 0
  state:
    terminated:
      exitCode: {{ $code }}
      reason: {{ if $failed }}Error{{ else }}Completed{{ end }}
      startedAt: {{ $started | Quote }}
      finishedAt: {{ $now | Quote }}
{{ end }}
phase: {{ if $failed }}Failed{{ else }}Succeeded{{ end }}
"""
).replace("EXIT_CODE", EXIT_CODE)


def _annotation(key: str) -> str:
    return f'.metadata.annotations["{key}"]'


def _stage(
    name: str,
    kind: str,
    selector: list[dict],
    template: str | None = None,
    delay: dict | None = None,
    delete: bool = False,
) -> dict:
    next_step: dict = {"delete": True} if delete else {}
    if template is not None:
        next_step["patches"] = [{"subresource": "status", "root": "status", "template": template}]
    spec: dict = {
        "resourceRef": {"apiGroup": "v1", "kind": kind},
        "selector": {"matchExpressions": [{"jq": s} for s in selector]},
        "next": next_step,
    }
    if delay:
        spec["delay"] = delay
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": spec,
    }


def _delay(default_ms: int, annotation: str) -> dict:
    # An unset or empty annotation falls back to the default.
    return {
        "durationMilliseconds": default_ms,
        "durationFrom": {"jq": {"expression": _annotation(annotation)}},
    }


NOT_DELETING = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}


def stages() -> list[dict]:
    return [
        _stage(
            "node-ready",
            "Node",
            [
                {
                    "key": '.status.conditions.[] | select(.type == "Ready") | .status',
                    "operator": "NotIn",
                    "values": ["True"],
                }
            ],
            _NODE_READY,
        ),
        _stage(
            "pod-running",
            "Pod",
            [
                NOT_DELETING,
                {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
                {
                    "key": '.status.conditions.[] | select(.type == "Ready") | .status',
                    "operator": "NotIn",
                    "values": ["True"],
                },
            ],
            _POD_RUNNING,
            delay=_delay(0, READY_AFTER),
        ),
        _stage(
            "job-pod-exit",
            "Pod",
            [
                NOT_DELETING,
                {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]},
            ],
            _JOB_POD_EXIT,
            delay=_delay(1000, RUN_FOR),
        ),
        _stage(
            "pod-delete",
            "Pod",
            [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}],
            delete=True,
        ),
    ]


class _LiteralDumper(yaml.SafeDumper):
    pass


def _literal_strings(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _literal_strings)


def write(path: Path) -> Path:
    """Write the stages as one multi-document YAML file for `kwok --config`."""
    path.write_text(yaml.dump_all(stages(), Dumper=_LiteralDumper, sort_keys=False))
    return path
