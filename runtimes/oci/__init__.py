"""A small OCI registry client: push a directory as an artifact, pull artifacts and images back.

What the runtimes move through registries:
- LoRA adapters, pushed by the tuning job and pulled by the inference server. The layout is the
  one Kaito's pusher writes (and its puller reads): an OCI image manifest whose config is an
  image config, with one `tar+gzip` layer holding `data/adapter_config.json` and
  `data/adapter_model.safetensors`, and the preset's name in the manifest annotation
  `sh.kaito.model.name`. Built with ORAS conventions (title and created annotations), so
  `oras`, `skopeo` and Kaito's own puller read it too.
- Model weights: Kaito's weight images (files under `workspace/tfs/weights/` in image layers),
  ORAS file artifacts (one blob per file, named by `org.opencontainers.image.title`), and
  ModelPack artifacts (`org.cncf.model.filepath`), gzip or zstd compressed.

The distribution API is spoken over HTTP(S) with `requests`: Bearer token or Basic auth,
whichever the registry's WWW-Authenticate challenge asks for, with credentials from a docker
`config.json` (a kubernetes.io/dockerconfigjson secret, mounted or as a manifest). Plain HTTP is
used for loopback registries and for hosts named in KAITO_OCI_INSECURE_REGISTRIES; TLS trusts
the system store, or the bundle in REQUESTS_CA_BUNDLE. No torch: the notebook side may import it.

Public functions (stable): `parse_reference`, `load_credentials`, `push_directory`,
`pull_directory`, `pull_adapter`, `pull_weights`, `inspect`; the `Registry` class for the rest.
The modules: `media` (formats), `reference`, `credentials`, `registry` (the API), `push`, `pull`.
"""

from __future__ import annotations

from .credentials import Credentials, load_credentials
from .errors import OCIError
from .media import (
    ADAPTER_DIR,
    ANNOTATION_CREATED,
    ANNOTATION_MODEL_NAME,
    ANNOTATION_MODELPACK_PATH,
    ANNOTATION_TITLE,
    ANNOTATION_UNPACK,
    DOCKER_HUB,
    DOCKER_HUB_API,
    DOCKER_HUB_AUTH_KEYS,
    DOCKER_IMAGE_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    IMAGE_CONFIGS,
    LAYER_TAR,
    LAYER_TAR_GZIP,
    LAYER_TAR_ZSTD,
    MANIFEST_TYPES,
    OCI_EMPTY,
    OCI_IMAGE_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    WEIGHTS_DIRS,
)
from .pull import inspect, pull_adapter, pull_directory, pull_weights, resolve_manifest
from .push import push_directory
from .reference import Reference, parse_reference
from .registry import Registry

__all__ = [
    "ADAPTER_DIR",
    "ANNOTATION_CREATED",
    "ANNOTATION_MODELPACK_PATH",
    "ANNOTATION_MODEL_NAME",
    "ANNOTATION_TITLE",
    "ANNOTATION_UNPACK",
    "DOCKER_HUB",
    "DOCKER_HUB_API",
    "DOCKER_HUB_AUTH_KEYS",
    "DOCKER_IMAGE_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "IMAGE_CONFIGS",
    "LAYER_TAR",
    "LAYER_TAR_GZIP",
    "LAYER_TAR_ZSTD",
    "MANIFEST_TYPES",
    "OCI_EMPTY",
    "OCI_IMAGE_CONFIG",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "WEIGHTS_DIRS",
    "Credentials",
    "OCIError",
    "Reference",
    "Registry",
    "inspect",
    "load_credentials",
    "parse_reference",
    "pull_adapter",
    "pull_directory",
    "pull_weights",
    "push_directory",
    "resolve_manifest",
]
