"""Pulling images and artifacts into a directory: adapters and model weights."""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .credentials import Credentials
from .errors import OCIError
from .media import (
    ADAPTER_DIR,
    ANNOTATION_MODELPACK_PATH,
    ANNOTATION_TITLE,
    ANNOTATION_UNPACK,
    DOCKER_LIST,
    IMAGE_CONFIGS,
    OCI_INDEX,
    WEIGHTS_DIRS,
)
from .reference import Reference, parse_reference
from .registry import Registry, checked_digest, client_for


def _descriptors(value: Any, what: str) -> list[dict[str, Any]]:
    """A manifest's list of descriptors, each with a digest we can verify (checked_digest)."""
    if not isinstance(value, list):
        raise OCIError(f"{what} is not a list of descriptors", reason="InvalidImage")
    for i, entry in enumerate(value):
        checked_digest(entry, f"{what}[{i}]")
    return value


def _choose_platform(index: dict[str, Any]) -> dict[str, Any]:
    """From an index, the linux/amd64 manifest if there is one, else the first real one."""
    entries = [
        m
        for m in _descriptors(index.get("manifests") or [], "the index's manifests")
        # BuildKit's attestation manifests are "unknown/unknown": never the content.
        if not isinstance(m.get("platform"), dict) or m["platform"].get("os") != "unknown"
    ]
    if not entries:
        raise OCIError("image index lists no manifests", reason="InvalidImage")
    for entry in entries:
        platform = entry.get("platform") if isinstance(entry.get("platform"), dict) else {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return entry
    return entries[0]


def resolve_manifest(client: Registry, ref: Reference) -> tuple[dict[str, Any], str]:
    """The image (or artifact) manifest `ref` names, following an index; (manifest, digest)."""
    manifest, media_type, digest = client.get_manifest(ref)
    if media_type in (OCI_INDEX, DOCKER_LIST) or "manifests" in manifest:
        entry = _choose_platform(manifest)
        manifest, media_type, digest = client.get_manifest(
            ref.with_reference(digest=entry["digest"])
        )
    if "layers" not in manifest:
        raise OCIError(
            f"{ref} is not an image or artifact manifest ({media_type})", reason="InvalidImage"
        )
    _descriptors(manifest["layers"], f"the layers of {ref}")
    if "config" in manifest:
        checked_digest(manifest["config"], f"the config of {ref}")
    return manifest, digest


def inspect(
    ref: str,
    *,
    credentials: Credentials | None = None,
    secret: str | os.PathLike | None = None,
    plain_http: bool | None = None,
) -> dict[str, Any]:
    """The manifest `ref` resolves to (an index followed to linux/amd64), with its digest."""
    target = parse_reference(ref)
    client = client_for(target, credentials, secret, plain_http=plain_http)
    manifest, digest = resolve_manifest(client, target)
    return {**manifest, "digest": digest}


def _safe_relative(name: object) -> PurePosixPath:
    """A path from an annotation or a tar member, inside the destination or refused."""
    path = PurePosixPath(name.lstrip("/")) if isinstance(name, str) else None
    if path is None or not path.parts or ".." in path.parts or path.is_absolute():
        raise OCIError(f"artifact names an unsafe path {name!r}", reason="InvalidImage")
    return path


def _open_decompressed(path: Path, media_type: str) -> BinaryIO:
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if media_type.endswith("zstd") or magic == b"\x28\xb5\x2f\xfd":
        try:
            import zstandard
        except ImportError as exc:
            raise OCIError(
                "this image has zstd-compressed layers and the zstandard package is missing",
                reason="ImagePullFailed",
                hint="pip install 'kaito-jupyter[runtime]' (it pins zstandard)",
            ) from exc
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _extract_layer(stream: BinaryIO, dest: Path) -> None:
    """Apply one image layer to `dest`: whiteouts delete, the rest is extracted safely."""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            rel = PurePosixPath(member.name.removeprefix("./").lstrip("/") or ".")
            name = rel.name
            if name == ".wh..wh..opq":  # opaque directory: earlier layers' contents vanish
                target = dest / _safe_relative(str(rel.parent)) if str(rel.parent) != "." else dest
                if target.is_dir():
                    for child in target.iterdir():
                        _remove(child)
                continue
            if name.startswith(".wh."):
                _remove(dest / _safe_relative(str(rel.parent / name[4:])))
                continue
            if member.isdev():
                continue
            # tarfile's "data" filter refuses absolute paths, escapes and links out of dest.
            tar.extract(member, dest, filter="data")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _is_tar(media_type: str) -> bool:
    return ".tar" in media_type  # ...layer.v1.tar[+gzip|+zstd], ...rootfs.diff.tar.gzip, ...


def pull_directory(
    ref: str,
    dest: str | os.PathLike,
    *,
    credentials: Credentials | None = None,
    secret: str | os.PathLike | None = None,
    plain_http: bool | None = None,
) -> Path:
    """Pull image or artifact `ref` into directory `dest` (created; its contents replaced).

    - an image (image config): its layers are unpacked in order, as a container runtime would;
    - an ORAS artifact: each titled blob is written under its title; a directory pushed by
      ORAS (`io.deis.oras.content.unpack`) is unpacked;
    - a ModelPack artifact: each layer goes to its `org.cncf.model.filepath`.
    Blobs are checked against their digests. Returns `dest`.
    """
    target = parse_reference(ref)
    client = client_for(target, credentials, secret, plain_http=plain_http)
    manifest, _ = resolve_manifest(client, target)
    out = Path(dest)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        root = staging / "root"
        root.mkdir()
        image = (manifest.get("config") or {}).get("mediaType") in IMAGE_CONFIGS
        for index, layer in enumerate(manifest["layers"]):
            # The scratch file is named by position: never by the digest the registry sent.
            blob = staging / f"layer-{index}.blob"
            _pull_layer(client, target.repository, layer, root, image=image, blob=blob)
        if out.exists():
            _remove(out)
        root.rename(out)  # atomic: a half-pulled artifact is never seen at `dest`
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _pull_layer(
    client: Registry,
    repository: str,
    layer: dict[str, Any],
    root: Path,
    *,
    image: bool,
    blob: Path,
) -> None:
    media_type = str(layer.get("mediaType", ""))
    notes = layer.get("annotations") if isinstance(layer.get("annotations"), dict) else {}
    with open(blob, "wb") as handle:
        client.fetch_blob(repository, layer, handle)
    try:
        modelpack_path = notes.get(ANNOTATION_MODELPACK_PATH)
        title = notes.get(ANNOTATION_TITLE)
        if not image and modelpack_path and not _is_tar(media_type):
            _place(blob, root / _safe_relative(modelpack_path))
        elif not image and title and notes.get(ANNOTATION_UNPACK) == "true":
            with _open_decompressed(blob, media_type) as stream:
                _extract_layer(stream, root)
        elif not image and title:
            # ORAS's default media type for a file is ...layer.v1.tar whatever the file is:
            # the title, not the media type, says this blob is a file.
            _place(blob, root / _safe_relative(title))
        elif image or _is_tar(media_type):
            with _open_decompressed(blob, media_type) as stream:
                _extract_layer(stream, root)
        else:
            raise OCIError(
                f"layer {layer['digest']} ({media_type}) has no file name and is not a tar",
                reason="InvalidImage",
            )
    finally:
        blob.unlink(missing_ok=True)


def _place(blob: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    blob.replace(target)


def _find_dir(root: Path, marker: str, preferred: Iterable[str]) -> Path | None:
    for rel in preferred:
        if (root / rel / marker).is_file():
            return root / rel
    if (root / marker).is_file():
        return root
    found = sorted(root.rglob(marker), key=lambda p: (len(p.parts), str(p)))
    return found[0].parent if found else None


def pull_adapter(
    ref: str,
    dest: str | os.PathLike,
    *,
    credentials: Credentials | None = None,
    secret: str | os.PathLike | None = None,
    plain_http: bool | None = None,
) -> Path:
    """Pull a LoRA adapter image into `dest`; returns the directory holding adapter_config.json.

    Reads Kaito's adapter images (`/data/adapter_*`), the ones `push_directory` writes, and ORAS
    artifacts of the two files.
    """
    root = pull_directory(ref, dest, credentials=credentials, secret=secret, plain_http=plain_http)
    found = _find_dir(root, "adapter_config.json", (ADAPTER_DIR,))
    if found is None:
        raise OCIError(
            f"image {ref} holds no adapter_config.json",
            reason="InvalidAdapter",
            hint="an adapter image has /data/adapter_config.json and /data/adapter_model.safetensors",
        )
    return found


def pull_weights(
    ref: str,
    dest: str | os.PathLike,
    *,
    credentials: Credentials | None = None,
    secret: str | os.PathLike | None = None,
    plain_http: bool | None = None,
) -> Path:
    """Pull model weights into `dest`; returns the checkpoint directory (the one with config.json).

    Reads Kaito's weight images (`/workspace/tfs/weights/`), ORAS file artifacts and ModelPack
    artifacts.
    """
    root = pull_directory(ref, dest, credentials=credentials, secret=secret, plain_http=plain_http)
    found = _find_dir(root, "config.json", WEIGHTS_DIRS)
    if found is None:
        raise OCIError(
            f"image {ref} holds no config.json: it is not a model checkpoint",
            reason="ModelNotFound",
        )
    return found
