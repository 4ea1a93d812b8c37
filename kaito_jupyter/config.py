"""One shared configuration for every process: the server extension, the CLI and the kernel.

Precedence: built-in defaults < the file `kaito.yaml` in the Jupyter config dir < environment.
`%kaito use`, `kaito use` and the server extension's traitlets all read and write the same file,
so every process points at the same backend.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from kaito_jupyter.errors import KaitoError

BACKENDS = ("local", "kubernetes")
PROVISIONERS = ("auto", "aks", "nodeclaim", "byo", "local")

# Public Azure. A sovereign cloud (or a simulated ARM) is one environment variable away.
AZURE_PUBLIC_ARM = "https://management.azure.com"


@dataclass
class AzureSettings:
    """Where the `aks` provisioner finds ARM and the cluster's agent pools."""

    subscription_id: str | None = None
    resource_group: str | None = None
    cluster_name: str | None = None
    arm_endpoint: str = AZURE_PUBLIC_ARM
    # Token audience for ARM; derived from the endpoint when unset.
    arm_audience: str | None = None
    # Entra ID authority; azure-identity reads AZURE_AUTHORITY_HOST itself, kept here for display.
    authority_host: str | None = None
    # A PEM file of CAs to trust for ARM and the authority instead of the system store: a
    # private cloud's own CA (or the test bed's simulated ARM).
    ca_bundle: str | None = None
    # MSAL asks the public cloud whether an authority host is a known one before using it; a
    # private authority (Azure Stack Hub, the test bed) needs that check skipped.
    disable_instance_discovery: bool = False

    def credential_scope(self) -> str:
        audience = self.arm_audience or self.arm_endpoint.rstrip("/")
        return audience.rstrip("/") + "/.default"


@dataclass
class KubernetesSettings:
    """The kubernetes backend's controller (the connection itself is the top-level kubeconfig,
    context and namespace)."""

    # Our runtime's image (runtimes/Dockerfile), for presets Kaito publishes no image of.
    runtime_image: str = "ghcr.io/kaito-project/kaito-jupyter-runtime:latest"
    # Kaito's runtime for its presets: vllm (Kaito's default) or transformers.
    kaito_runtime: str = "vllm"
    # Where the one-active-reconciler Lease lives.
    lease_namespace: str = "kube-system"
    # Install the Workspace CRD on first use when it is absent (and permitted).
    install_crd: bool = True


@dataclass
class Settings:
    backend: str = "local"
    namespace: str = "default"
    kubeconfig: str | None = None
    context: str | None = None
    provisioner: str = "auto"
    # Private, loopback and cluster-internal registry hosts (`host:port`, or `host` for every
    # port) that images may name; others such are refused at admission and by the OCI client.
    allowed_private_registries: list[str] = field(default_factory=list)
    azure: AzureSettings = field(default_factory=AzureSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    # The local backend's directory (its SQLite store, logs, adapters); default: the Jupyter
    # data dir's kaito/ (backends/local/paths.py).
    local_dir: str | None = None


# Sections of the settings: name -> dataclass.
SECTIONS = {"azure": AzureSettings, "kubernetes": KubernetesSettings}

# environment variable -> (section, key). Section None is the top level.
ENVIRONMENT = {
    "KAITO_BACKEND": (None, "backend"),
    "KAITO_NAMESPACE": (None, "namespace"),
    "KUBECONFIG": (None, "kubeconfig"),
    "KAITO_KUBE_CONTEXT": (None, "context"),
    "KAITO_PROVISIONER": (None, "provisioner"),
    "KAITO_ALLOWED_PRIVATE_REGISTRIES": (None, "allowed_private_registries"),  # comma-separated
    "KAITO_LOCAL_DIR": (None, "local_dir"),
    "AZURE_SUBSCRIPTION_ID": ("azure", "subscription_id"),
    "KAITO_AKS_RESOURCE_GROUP": ("azure", "resource_group"),
    "KAITO_AKS_CLUSTER": ("azure", "cluster_name"),
    "KAITO_ARM_ENDPOINT": ("azure", "arm_endpoint"),
    "KAITO_ARM_AUDIENCE": ("azure", "arm_audience"),
    "AZURE_AUTHORITY_HOST": ("azure", "authority_host"),
    "KAITO_AZURE_CA_BUNDLE": ("azure", "ca_bundle"),
    "KAITO_AZURE_DISABLE_INSTANCE_DISCOVERY": ("azure", "disable_instance_discovery"),
    "KAITO_RUNTIME_IMAGE": ("kubernetes", "runtime_image"),
    "KAITO_LEASE_NAMESPACE": ("kubernetes", "lease_namespace"),
}

# Settings that are booleans; the environment and hand-written files spell them as words.
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


CACHE_ENV = "KAITO_JUPYTER_CACHE"
OLD_CACHE_ENV = "KAITO_CACHE_DIR"  # its name before; still read, with a DeprecationWarning


def cache_root(environ: dict[str, str] | None = None) -> Path:
    """Where everything expensive is kept, outside any repository: converted checkpoints,
    downloads, pulled images, tuning work directories, the test bed's builds.
    KAITO_JUPYTER_CACHE, else ~/.cache/kaito-jupyter."""
    environ = os.environ if environ is None else environ
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV])
    if environ.get(OLD_CACHE_ENV):
        warnings.warn(
            f"{OLD_CACHE_ENV} is deprecated: set {CACHE_ENV} instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return Path(environ[OLD_CACHE_ENV])
    return Path.home() / ".cache" / "kaito-jupyter"


def config_dir() -> Path:
    """The Jupyter config dir (JUPYTER_CONFIG_DIR, else ~/.jupyter), without importing jupyter."""
    return Path(os.environ.get("JUPYTER_CONFIG_DIR") or Path.home() / ".jupyter")


def config_path() -> Path:
    return config_dir() / "kaito.yaml"


def load(path: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read the settings: defaults, then the file, then the environment."""
    path = path or config_path()
    environ = os.environ if environ is None else environ
    data: dict = {}
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise KaitoError(
                f"{path} is not valid YAML: {exc}", hint="fix or delete the file"
            ) from exc
        if not isinstance(data, dict):
            raise KaitoError(
                f"{path} must hold a mapping of settings", hint="fix or delete the file"
            )
    for var, (section, key) in ENVIRONMENT.items():
        if environ.get(var):
            target = data.setdefault(section, {}) if section else data
            value = environ[var]
            if isinstance(getattr(SECTIONS[section]() if section else Settings(), key), list):
                value = [item.strip() for item in value.split(",") if item.strip()]
            target[key] = value
    return _from_dict(data, source=str(path))


def save(settings: Settings, path: Path | None = None) -> Path:
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(asdict(settings), sort_keys=False))
    return path


def _from_dict(data: dict, *, source: str) -> Settings:
    known_top = {f.name for f in fields(Settings)}
    unknown = [k for k in data if k not in known_top]
    sections = {}
    for section, cls in SECTIONS.items():
        raw = data.get(section) or {}
        known = {f.name for f in fields(cls)}
        unknown += [f"{section}.{k}" for k in raw if k not in known]
        sections[section] = raw
    if unknown:
        described = "; ".join(
            f"{name}.{{{', '.join(sorted(f.name for f in fields(cls)))}}}"
            for name, cls in SECTIONS.items()
        )
        raise KaitoError(
            f"unknown setting(s) in {source}: {', '.join(sorted(unknown))}",
            hint=f"known settings: {', '.join(sorted(known_top))}; {described}",
        )
    top = {k: _coerce(Settings, k, v, source) for k, v in data.items() if k not in SECTIONS}
    built = {
        name: cls(**{k: _coerce(cls, k, v, source) for k, v in sections[name].items()})
        for name, cls in SECTIONS.items()
    }
    settings = Settings(**top, **built)
    if settings.backend not in BACKENDS:
        raise KaitoError(
            f"backend {settings.backend!r} is not one of {', '.join(BACKENDS)}",
            hint="set KAITO_BACKEND or `backend:` in " + source,
        )
    if settings.provisioner not in PROVISIONERS:
        raise KaitoError(
            f"provisioner {settings.provisioner!r} is not one of {', '.join(PROVISIONERS)}",
            hint="set KAITO_PROVISIONER or `provisioner:` in " + source,
        )
    return settings


def _coerce(cls, key: str, value, source: str):
    """Turn "true"/"0"/... into a bool for boolean fields, check list fields; leave other values
    alone."""
    default = getattr(cls(), key)
    if isinstance(default, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise KaitoError(
                f"setting {key} must be a list of strings, not {value!r}",
                hint=f"write it as a YAML list in {source}, or comma-separated in the environment",
            )
        return value
    if not isinstance(default, bool) or isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise KaitoError(
        f"setting {key} is {value!r}, not a boolean", hint=f"use true or false (in {source})"
    )
