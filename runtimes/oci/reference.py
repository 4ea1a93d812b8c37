"""Image references, `registry/repository[:tag][@digest]`, parsed as docker parses them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kaito_jupyter.api import image_reference

from .errors import OCIError
from .media import DOCKER_HUB, DOCKER_HUB_API


@dataclass(frozen=True)
class Reference:
    """`registry/repository[:tag][@digest]`, with Docker Hub's defaults filled in."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def with_reference(self, tag: str | None = None, digest: str | None = None) -> Reference:
        return Reference(self.registry, self.repository, tag, digest)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_reference(ref: str) -> Reference:
    """Parse an image reference as docker does: `ubuntu` is `docker.io/library/ubuntu:latest`.

    The grammar is kaito_jupyter.api.image_reference's, the one admission checks; a digest must
    be a sha256 or sha512 one (it is verified on every pull).
    """
    text = str(ref).strip()
    for scheme in ("oci://", "docker://"):
        text = text.removeprefix(scheme)
    try:
        name = image_reference.split(text)
    except image_reference.BadReference as exc:
        raise OCIError(
            f"invalid image reference {ref!r}: {exc}",
            reason="InvalidImage",
            hint="image references look like registry.example.com/team/adapter:1.0",
        ) from None
    registry, repository = name.registry or DOCKER_HUB, name.path
    if registry in ("index.docker.io", DOCKER_HUB_API):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    tag = name.tag if name.tag or name.digest else "latest"
    return Reference(registry, repository, tag, name.digest)


def looks_like_image(text: str) -> bool:
    """Whether `text` names an image with an explicit registry host
    (registry.example.com/repo:tag, oci://...), rather than a path that exists or a URL."""
    text = text.strip()
    if text.startswith("oci://"):
        return True
    if text.startswith(("/", ".", "~", "http://", "https://")) or Path(text).expanduser().exists():
        return False
    return image_reference.names_registry(text)
