"""Node provisioners: where a workspace's GPU nodes come from (`aks`, `nodeclaim`, `byo`,
`local`). Cloud SDKs are imported inside the functions that use them, never at package
import, so `import kaito_jupyter` stays light."""

from typing import Any


def select(settings: Any, kube: Any, *, list_nodes: Any = None):
    """The provisioner the settings name (`provisioner:` in kaito.yaml, KAITO_PROVISIONER),
    for the cluster behind `kube` (a backends.kubernetes.kube.Kube). `list_nodes` returns the
    cluster's Node objects as dicts (the controller passes its node informer's cache).

    "auto" and "byo" are nodes that already exist for now; aks and nodeclaim come with their
    modules.
    """
    from kaito_jupyter.provisioners.byo import ByoProvisioner

    if list_nodes is None:

        def list_nodes():
            from kaito_jupyter.backends.kubernetes.kube import NODE

            return kube.list(NODE).get("items") or []

    return ByoProvisioner(list_nodes)
