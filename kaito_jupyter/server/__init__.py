"""The Jupyter server extension (enabled by jupyter-config/jupyter_server_config.d/)."""

from __future__ import annotations


def _jupyter_server_extension_points() -> list[dict]:
    from kaito_jupyter.server.app import KaitoExtension

    return [{"module": "kaito_jupyter.server", "app": KaitoExtension}]
