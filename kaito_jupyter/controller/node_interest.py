"""Which workspaces a node's change can matter to. Pure: dicts in, a yes or no out.

A node coming, going or changing shape (labels, taints, readiness, GPUs) used to queue every
workspace. With a burst of new nodes (an aks or nodeclaim run making one pool per workspace)
that is nodes x workspaces reconciles, each one rewriting a progress message: the workers spend
the burst re-reading workspaces the node has nothing to do with. A node matters to a workspace
if it could be one of its nodes (its label selector matches, or it names the node as
preferred), if it already is (status.workerNodes), or if it was made for it (the
`kaito.sh/workspace` labels provisioners put on their nodes). When in doubt (no selector, an
operator we do not know) the answer is yes.
"""

from __future__ import annotations

from typing import Any

from kaito_jupyter.provisioners.agent_pools import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE


def _matches(labels: dict[str, str], requirement: dict[str, Any]) -> bool | None:
    key, op = requirement.get("key"), requirement.get("operator")
    values = requirement.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return None  # unknown: the caller says yes


def concerns(node_name: str, labels: dict[str, str], workspace: dict[str, Any]) -> bool:
    """Whether a node named `node_name` with `labels` can matter to `workspace` (a dict)."""
    meta = workspace.get("metadata") or {}
    if (
        labels.get(LABEL_WORKSPACE) == meta.get("name")
        and labels.get(LABEL_WORKSPACE_NAMESPACE) == meta.get("namespace")
        and meta.get("name")
    ):
        return True
    status = workspace.get("status") if isinstance(workspace.get("status"), dict) else {}
    if node_name in (status.get("workerNodes") or []):
        return True
    resource = workspace.get("resource") if isinstance(workspace.get("resource"), dict) else {}
    if node_name in (resource.get("preferredNodes") or []):
        return True
    selector = resource.get("labelSelector") if isinstance(resource, dict) else None
    selector = selector if isinstance(selector, dict) else {}
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return True  # any node of its instance type may do: cannot rule it out
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for requirement in expressions:
        verdict = _matches(labels, requirement if isinstance(requirement, dict) else {})
        if verdict is None:
            return True
        if not verdict:
            return False
    return True
