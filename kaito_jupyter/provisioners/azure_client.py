"""The Azure clients the `aks` provisioner works through, built from Settings.azure.

Everything that differs between public Azure, a sovereign cloud and a private ARM endpoint
is configuration (kaito_jupyter/config.py): the ARM endpoint and its token audience, the Entra
ID authority, a CA bundle, and whether MSAL may check the authority with the public cloud.
The credential is azure-identity's DefaultAzureCredential, so the usual AZURE_* variables,
workload identity and managed identity all work unchanged.

azure-identity and azure-mgmt-containerservice (the `azure` extra) are imported here, lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kaito_jupyter.config import AzureSettings, Settings
from kaito_jupyter.errors import ProvisioningError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.mgmt.containerservice import ContainerServiceClient

INSTALL_HINT = "pip install 'kaito-jupyter[azure]'"


def azure_settings(settings: Settings | AzureSettings) -> AzureSettings:
    return settings.azure if isinstance(settings, Settings) else settings


def credential(settings: Settings | AzureSettings, **kwargs: Any) -> TokenCredential:
    """DefaultAzureCredential, pointed at the configured authority and trusting its CA."""
    azure = azure_settings(settings)
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise ProvisioningError(
            "the aks provisioner needs azure-identity",
            reason="MissingDependency",
            hint=INSTALL_HINT,
        ) from exc
    options: dict[str, Any] = {}
    if azure.authority_host:
        options["authority"] = azure.authority_host
    if azure.disable_instance_discovery:
        options["disable_instance_discovery"] = True
    if azure.ca_bundle:
        options["connection_verify"] = azure.ca_bundle
    options.update(kwargs)
    return DefaultAzureCredential(**options)


def container_service_client(
    settings: Settings | AzureSettings,
    token_credential: TokenCredential | None = None,
    **client_kwargs: Any,
) -> ContainerServiceClient:
    """A ContainerServiceClient for the configured subscription, ARM endpoint and audience.

    `client_kwargs` go to the client as azure-core options (retry_total, polling_interval,
    logging_enable, ...).
    """
    azure = azure_settings(settings)
    if not azure.subscription_id:
        raise ProvisioningError(
            "no Azure subscription is configured for the aks provisioner",
            reason="MissingConfiguration",
            hint="set AZURE_SUBSCRIPTION_ID (or azure.subscription_id in kaito.yaml)",
        )
    try:
        from azure.mgmt.containerservice import ContainerServiceClient
    except ImportError as exc:
        raise ProvisioningError(
            "the aks provisioner needs azure-mgmt-containerservice",
            reason="MissingDependency",
            hint=INSTALL_HINT,
        ) from exc
    options: dict[str, Any] = {
        "base_url": azure.arm_endpoint,
        "credential_scopes": [azure.credential_scope()],
    }
    if azure.ca_bundle:
        options["connection_verify"] = azure.ca_bundle
    options.update(client_kwargs)
    return ContainerServiceClient(
        token_credential or credential(azure), azure.subscription_id, **options
    )


def cluster_user_kubeconfig(
    settings: Settings | AzureSettings, token_credential: TokenCredential | None = None
) -> str:
    """The AKS cluster's user kubeconfig, fetched with listClusterUserCredential: with the
    subscription, resource group and cluster configured, no kubeconfig file is needed."""
    azure = azure_settings(settings)
    if not (azure.resource_group and azure.cluster_name):
        raise ProvisioningError(
            "no AKS cluster is configured to fetch a kubeconfig from",
            reason="MissingConfiguration",
            hint="set KAITO_AKS_RESOURCE_GROUP and KAITO_AKS_CLUSTER (or azure.* in kaito.yaml)",
        )
    with container_service_client(azure, token_credential) as client:
        result = client.managed_clusters.list_cluster_user_credentials(
            azure.resource_group, azure.cluster_name
        )
    for kubeconfig in result.kubeconfigs or []:
        value = kubeconfig.value
        if isinstance(value, str):  # base64 on the wire; some SDK versions leave it so
            import base64

            value = base64.b64decode(value)
        return bytes(value).decode()
    raise ProvisioningError(
        f"AKS returned no user kubeconfig for {azure.cluster_name}",
        reason="NoKubeconfig",
        hint="check the identity may call listClusterUserCredential on the cluster",
    )


def write_cluster_user_kubeconfig(
    settings: Settings | AzureSettings,
    path: str,
    token_credential: TokenCredential | None = None,
) -> str:
    """cluster_user_kubeconfig() written to `path`, readable by its owner only (it may hold
    a token); returns the path, for KUBECONFIG."""
    import os

    text = cluster_user_kubeconfig(settings, token_credential)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path


def kubeconfig_from_coordinates(settings: Settings) -> str | None:
    """A kubeconfig path for the kubernetes backend when none is configured: with no
    `kubeconfig` setting (KUBECONFIG), no ~/.kube/config, not inside a cluster, and the AKS
    cluster's coordinates configured, its user kubeconfig is fetched through ARM into the
    cache (mode 0600). None when a kubeconfig is to be found the usual way."""
    import os
    from pathlib import Path

    from kaito_jupyter.config import cache_root

    azure = settings.azure
    if settings.kubeconfig or os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    if (Path.home() / ".kube" / "config").exists():
        return None
    if not (azure.subscription_id and azure.resource_group and azure.cluster_name):
        return None
    directory = cache_root() / "aks"
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{azure.subscription_id}-{azure.resource_group}-{azure.cluster_name}.kubeconfig"
    return write_cluster_user_kubeconfig(azure, str(directory / name))
