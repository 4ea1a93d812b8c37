"""Node provisioners: where a workspace's GPU nodes come from (`aks`, `nodeclaim`, `byo`,
`local`). Cloud SDKs are imported inside the functions that use them, never at package
import, so `import kaito_jupyter` stays light."""

from typing import Any


def select(settings: Any, kube: Any, *, list_nodes: Any = None):
    """The provisioner the settings name (`provisioner:` in kaito.yaml, KAITO_PROVISIONER),
    for the cluster behind `kube` (a backends.kubernetes.kube.Kube). `list_nodes` returns the
    cluster's Node objects as dicts (the controller passes its node informer's cache).

    "auto" is what provisioners.selection detects: aks for the configured AKS cluster,
    nodeclaim where NodeClaims are served, else byo (nodes that already exist).
    """
    from kaito_jupyter.provisioners.byo import ByoProvisioner

    if list_nodes is None:

        def list_nodes():
            from kaito_jupyter.backends.kubernetes.kube import NODE

            return kube.list(NODE).get("items") or []

    from kaito_jupyter.provisioners.selection import choose

    chosen = choose(settings, kube, list_nodes)
    if chosen == "aks":
        from kaito_jupyter.provisioners.aks import AksProvisioner

        return AksProvisioner(settings, list_nodes)
    if chosen == "nodeclaim":
        from kaito_jupyter.provisioners.nodeclaim import NodeClaimProvisioner

        return NodeClaimProvisioner(kube, list_nodes)
    return ByoProvisioner(list_nodes)
