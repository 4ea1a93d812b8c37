"""Media types, annotations and path conventions of the images the runtimes move: facts
of the OCI, Docker, ORAS, ModelPack and Kaito formats, not choices."""

from __future__ import annotations

# Media types (OCI image spec, Docker schema 2, ORAS, ModelPack): facts, not choices.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_IMAGE_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_UNPACK = "io.deis.oras.content.unpack"  # ORAS: a directory pushed as tar+gzip
ANNOTATION_MODEL_NAME = "sh.kaito.model.name"  # Kaito: the preset an adapter was tuned from
ANNOTATION_MODELPACK_PATH = "org.cncf.model.filepath"

MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
IMAGE_CONFIGS = (OCI_IMAGE_CONFIG, DOCKER_IMAGE_CONFIG)

ADAPTER_DIR = "data"  # where Kaito's adapter images keep the adapter
WEIGHTS_DIRS = ("workspace/tfs/weights", "workspace/weights", "weights", "data")

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_AUTH_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")
