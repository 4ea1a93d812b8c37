"""ConfigMaps on the local backend: files in `<local dir>/configmaps/<name>.yaml`.

Kaito's `tuning.config` (and `inference.config`) name a ConfigMap in the workspace's namespace;
here the same name finds a file. The file holds the ConfigMap manifest or its
`training_config.yaml` alone: the tuning job reads either.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from kaito_jupyter import config
from kaito_jupyter.errors import KaitoError

_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def path(root: Path, name: str) -> Path:
    if not _NAME.fullmatch(name) or len(name) > 253:
        raise KaitoError(
            f"ConfigMap name {name!r} is not a DNS-1123 subdomain",
            hint="lower-case letters, digits, '-' and '.'",
        )
    return Path(root) / "configmaps" / f"{name}.yaml"


def save(name: str, text: str, settings: config.Settings | None = None) -> Path:
    """Store ConfigMap `name` for the local backend; returns the file written."""
    from .paths import state_dir

    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KaitoError(f"ConfigMap {name}: not YAML: {exc}") from exc
    if not isinstance(parsed, dict):
        raise KaitoError(f"ConfigMap {name}: expected a mapping (training_config: ...)")
    target = path(state_dir(settings or config.load()), name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, target)
    return target
