"""The product's Azure settings (kaito_jupyter/config.py) and the client factory built on them
(kaito_jupyter/provisioners/azure_client.py): what a user sets for a sovereign or private cloud
is what the SDK client uses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kaito_jupyter import config
from kaito_jupyter.errors import KaitoError, ProvisioningError
from kaito_jupyter.provisioners.azure_client import container_service_client


def _load(tmp_path, **environ) -> config.Settings:
    return config.load(path=tmp_path / "kaito.yaml", environ=environ)


def test_environment_points_the_client_at_another_cloud(tmp_path):
    settings = _load(
        tmp_path,
        AZURE_SUBSCRIPTION_ID="sub",
        KAITO_ARM_ENDPOINT="https://management.sovereign.example",
        KAITO_ARM_AUDIENCE="https://management.core.sovereign.example/",
        KAITO_AZURE_CA_BUNDLE="/etc/ssl/sovereign.pem",
        KAITO_AZURE_DISABLE_INSTANCE_DISCOVERY="yes",
    )
    azure = settings.azure
    assert azure.disable_instance_discovery is True
    assert azure.ca_bundle == "/etc/ssl/sovereign.pem"
    assert azure.credential_scope() == "https://management.core.sovereign.example/.default"

    client = container_service_client(settings, token_credential=object())
    assert client._config.base_url == "https://management.sovereign.example"
    assert client._config.credential_scopes == [
        "https://management.core.sovereign.example/.default"
    ]
    assert client._config.subscription_id == "sub"


def test_public_azure_is_the_default(tmp_path):
    azure = _load(tmp_path).azure
    assert azure.arm_endpoint == "https://management.azure.com"
    assert azure.credential_scope() == "https://management.azure.com/.default"
    assert azure.disable_instance_discovery is False


def test_a_boolean_setting_must_be_a_boolean(tmp_path):
    with pytest.raises(KaitoError, match="not a boolean"):
        _load(tmp_path, KAITO_AZURE_DISABLE_INSTANCE_DISCOVERY="maybe")
    path = tmp_path / "kaito.yaml"
    path.write_text("azure:\n  disable_instance_discovery: true\n")
    assert config.load(path=path, environ={}).azure.disable_instance_discovery is True


def test_no_subscription_is_an_actionable_error(tmp_path):
    with pytest.raises(ProvisioningError, match="AZURE_SUBSCRIPTION_ID"):
        container_service_client(_load(tmp_path), token_credential=object())


def test_the_notebook_side_does_not_import_azure():
    code = (
        "import sys, kaito_jupyter, kaito_jupyter.config, kaito_jupyter.provisioners.azure_client;"
        "print([m for m in sys.modules if m.split('.')[0] == 'azure'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
