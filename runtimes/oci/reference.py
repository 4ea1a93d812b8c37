"""Image references, `registry/repository[:tag][@digest]`, parsed as docker parses them."""

from __future__ import annotations

import re
from dataclasses import dataclass

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


_REPO_RE = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


def parse_reference(ref: str) -> Reference:
    """Parse an image reference as docker does: `ubuntu` is `docker.io/library/ubuntu:latest`.

    The first path component is the registry when it has a dot or a port, or is `localhost`.
    """
    text = str(ref).strip()
    for scheme in ("oci://", "docker://"):
        text = text.removeprefix(scheme)
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise OCIError(f"invalid digest in image reference {ref!r}", reason="InvalidImage")
    tag = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise OCIError(f"invalid tag {tag!r} in image reference {ref!r}", reason="InvalidImage")
    first, _, rest = text.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, text
    if registry in ("index.docker.io", DOCKER_HUB_API):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not repository or not _REPO_RE.match(repository):
        raise OCIError(
            f"invalid repository {repository!r} in image reference {ref!r}",
            reason="InvalidImage",
            hint="image references look like registry.example.com/team/adapter:1.0",
        )
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repository, tag, digest)
