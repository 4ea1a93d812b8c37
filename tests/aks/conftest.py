"""The aks tier talks to the simulated ARM through the product's own client factory, with the
product configuration `run --arm` exports (kaito_jupyter/config.py)."""

from __future__ import annotations

import pytest

from kaito_jupyter import config
from kaito_jupyter.provisioners.azure_client import container_service_client


@pytest.fixture
def azure_settings(arm, monkeypatch, tmp_path):
    """Settings as `kaito controller` would load them inside `run --arm`."""
    for key, value in arm.environment().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "jupyter-config"))
    return config.load()


@pytest.fixture
def aks(azure_settings):
    """A real ContainerServiceClient against the simulated ARM; quick retries for tests."""
    with container_service_client(azure_settings, retry_backoff_factor=0.1) as client:
        yield client
