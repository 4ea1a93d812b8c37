"""Where the local backend keeps its state: `<Jupyter data dir>/kaito`, unless configured.

The Jupyter data dir is found the way jupyter_core finds it (JUPYTER_DATA_DIR, else
$XDG_DATA_HOME/jupyter, else ~/.local/share/jupyter) without importing Jupyter. The
`local_dir` setting (kaito.yaml) or KAITO_LOCAL_DIR names another directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from kaito_jupyter import config

DB_NAME = "local.db"


def jupyter_data_dir(environ: dict[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    if environ.get("JUPYTER_DATA_DIR"):
        return Path(environ["JUPYTER_DATA_DIR"]).expanduser()
    if environ.get("XDG_DATA_HOME"):
        return Path(environ["XDG_DATA_HOME"]).expanduser() / "jupyter"
    return Path.home() / ".local" / "share" / "jupyter"


def state_dir(settings: config.Settings | None = None) -> Path:
    configured = settings.local_dir if settings is not None else None
    if configured:
        return Path(configured).expanduser()
    return jupyter_data_dir() / "kaito"


def logs_dir(root: Path) -> Path:
    return root / "logs"


def log_path(root: Path, namespace: str, name: str) -> Path:
    return logs_dir(root) / f"{namespace}.{name}.log"


def oci_layout(root: Path) -> Path:
    """The local OCI image layout store: adapters pushed by local tuning workspaces."""
    return root / "oci"
