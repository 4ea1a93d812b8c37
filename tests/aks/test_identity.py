"""azure-identity gets its tokens from the simulator's Entra ID endpoints, and ARM accepts
only those tokens, for its own audience."""

from __future__ import annotations

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential

from kaito_jupyter.provisioners.azure_client import credential


def test_default_credential_gets_a_token_from_the_configured_authority(arm, azure_settings):
    token = credential(azure_settings).get_token(azure_settings.azure.credential_scope())
    assert token.token and token.expires_on > 0
    [issued] = arm.requests("entra.token")[-1:]
    assert issued["body"]["client_id"] == arm.tokens.client_id
    assert issued["body"]["client_secret"] == "***"  # never written to the log
    assert arm.requests("entra.discovery"), "MSAL read the OpenID discovery document"


def test_a_wrong_secret_is_refused_as_entra_id_refuses_it(arm, azure_settings):
    env = arm.environment()
    wrong = ClientSecretCredential(
        env["AZURE_TENANT_ID"],
        env["AZURE_CLIENT_ID"],
        "not-the-secret",
        authority=env["AZURE_AUTHORITY_HOST"],
        disable_instance_discovery=True,
        connection_verify=env["KAITO_AZURE_CA_BUNDLE"],
    )
    with pytest.raises(ClientAuthenticationError) as raised:
        wrong.get_token(azure_settings.azure.credential_scope())
    assert "AADSTS7000215" in str(raised.value)


def test_arm_refuses_requests_without_a_token_for_its_audience(arm, azure_settings):
    env = arm.environment()
    azure = azure_settings.azure
    url = (
        f"{azure.arm_endpoint}/subscriptions/{azure.subscription_id}/resourceGroups/"
        f"{azure.resource_group}/providers/Microsoft.ContainerService/managedClusters/"
        f"{azure.cluster_name}?api-version=2026-08-01"
    )
    bare = requests.get(url, verify=env["KAITO_AZURE_CA_BUNDLE"], timeout=5)
    assert bare.status_code == 401
    assert bare.json()["error"]["code"] == "InvalidAuthenticationToken"

    other_audience = credential(azure_settings).get_token("https://graph.example/.default")
    wrong = requests.get(
        url,
        headers={"Authorization": f"Bearer {other_audience.token}"},
        verify=env["KAITO_AZURE_CA_BUNDLE"],
        timeout=5,
    )
    assert wrong.status_code == 401
    assert "audience" in wrong.json()["error"]["message"]
