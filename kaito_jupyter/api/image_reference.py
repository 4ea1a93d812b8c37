"""Image references and content digests: the one grammar that admission (api.validation) and the
OCI client (runtimes/oci) both read, as docker's reference grammar and the OCI image spec
define them.

    reference  := [host[:port]/]path[:tag][@digest]
    host       := domain components joined by dots | [IPv6]
    path       := components [a-z0-9]+ joined by '.', '_', '__' or '-'s, separated by '/'
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" encoded (OCI); only sha256 (64) and sha512 (128 lowercase hex
                  digits) are accepted: a digest we cannot verify is refused, never trusted.

The first path component is the registry when it has a dot or a port, or is `localhost`
(docker's rule). No defaults are filled in here: runtimes/oci adds Docker Hub's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}  # the registered algorithms, in hex digits

_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_HEX = re.compile(r"[0-9a-f]+")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?"
)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MAX_NAME = 255  # docker's limit on registry/path


class BadReference(ValueError):
    """Not an image reference; the message says which part is wrong."""


@dataclass(frozen=True)
class ImageName:
    """An image reference as written: the registry only when it names one."""

    registry: str | None
    path: str
    tag: str | None
    digest: str | None


def digest_problem(digest: object) -> str | None:
    """What is wrong with a content digest, or None for a sha256/sha512 digest we can verify."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        return f"{digest!r} is not a digest (algorithm:hex, e.g. sha256:<64 hex digits>)"
    algorithm, encoded = digest.split(":", 1)
    length = DIGEST_LENGTHS.get(algorithm)
    if length is None:
        return f"digest algorithm {algorithm!r} is not supported (sha256 or sha512)"
    if len(encoded) != length or not _HEX.fullmatch(encoded):
        return f"{digest!r} is not a {algorithm} digest ({length} lower-case hex digits)"
    return None


def split(text: str) -> ImageName:
    """The parts of an image reference; raises BadReference naming the part that is wrong."""
    name, at, digest = text.partition("@")
    if at and (problem := digest_problem(digest)):
        raise BadReference(problem)
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise BadReference(f"tag {tag!r} is not valid (letters, digits, '_', '.', '-')")
    first, _, rest = name.partition("/")
    registry = None
    if rest and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        if not _DOMAIN.fullmatch(first):
            raise BadReference(f"registry {first!r} is not a host[:port]")
        registry, name = first, rest
    if not _PATH.fullmatch(name):
        raise BadReference(
            f"repository {name!r} is not valid (lower-case letters and digits, separated by "
            "'.', '_', '-' or '/')"
        )
    if len(name) + len(registry or "") + 1 > MAX_NAME:
        raise BadReference(f"the image name is longer than {MAX_NAME} characters")
    return ImageName(registry, name, tag, digest if at else None)


def names_registry(text: str) -> bool:
    """Whether `text` is an image reference with an explicit registry host
    (registry.example.com/repo:tag), as opposed to a path or a bare name."""
    try:
        return split(text).registry is not None
    except BadReference:
        return False
