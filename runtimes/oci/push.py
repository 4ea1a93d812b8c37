"""Pushing a directory as an OCI artifact, in the layout of Kaito's adapter images."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from .credentials import Credentials
from .errors import OCIError
from .media import (
    ADAPTER_DIR,
    ANNOTATION_CREATED,
    ANNOTATION_TITLE,
    LAYER_TAR_GZIP,
    OCI_IMAGE_CONFIG,
    OCI_MANIFEST,
)
from .reference import parse_reference
from .registry import CHUNK, client_for


def _sha256_file(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink())


def _write_layer(directory: Path, prefix: str, staging: Path) -> tuple[Path, str]:
    """A reproducible tar+gzip of `directory`'s files under `prefix/`; returns (path, diff_id).

    Fixed mtimes, owners and order: the same adapter always gives the same digest.
    """
    tar_path = staging / "layer.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path in _files(directory):
            rel = PurePosixPath(prefix, *path.relative_to(directory).parts)
            for parent in reversed(rel.parents[:-1]):  # data, data/sub, ...: dirs first
                name = str(parent)
                if name not in dirs:
                    dirs.add(name)
                    info = tarfile.TarInfo(name)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    tar.addfile(info)
            info = tarfile.TarInfo(str(rel))
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    diff_id, _ = _sha256_file(tar_path)
    gz_path = staging / "layer.tar.gz"
    with (
        open(tar_path, "rb") as src,
        open(gz_path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
    ):
        shutil.copyfileobj(src, gz, CHUNK)
    tar_path.unlink()
    return gz_path, diff_id


def push_directory(
    directory: str | os.PathLike,
    ref: str,
    *,
    prefix: str = ADAPTER_DIR,
    annotations: dict[str, str] | None = None,
    credentials: Credentials | None = None,
    secret: str | os.PathLike | None = None,
    plain_http: bool | None = None,
) -> str:
    """Push the files of `directory` to the image reference `ref`; returns the manifest digest.

    The artifact is Kaito's adapter image layout: one reproducible `tar+gzip` layer with the
    files under `prefix/` (`data/` by default), an OCI image config listing the layer's diff_id,
    ORAS's title and created annotations, plus `annotations` on the manifest (pass
    {"sh.kaito.model.name": preset} for an adapter). Credentials come from `credentials`, else
    from `secret` (a docker config.json or dockerconfigjson secret), else ~/.docker/config.json.
    """
    source = Path(directory)
    if not source.is_dir() or not _files(source):
        raise OCIError(f"{source} is not a directory with files to push", reason="ImagePushFailed")
    target = parse_reference(ref)
    if target.digest:
        raise OCIError(f"push to a tag, not a digest: {ref}", reason="InvalidImage")
    client = client_for(target, credentials, secret, plain_http=plain_http)
    with tempfile.TemporaryDirectory(prefix="kaito-oci-push-") as tmp:
        layer, diff_id = _write_layer(source, prefix.strip("/"), Path(tmp))
        layer_digest, layer_size = _sha256_file(layer)
        config = json.dumps(
            {"rootfs": {"type": "layers", "diff_ids": [diff_id]}}, separators=(",", ":")
        ).encode()
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        client.push_blob(target.repository, layer, layer_digest, layer_size)
        client.push_blob(target.repository, config, config_digest, len(config))
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_IMAGE_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {
                    "mediaType": LAYER_TAR_GZIP,
                    "digest": layer_digest,
                    "size": layer_size,
                    "annotations": {ANNOTATION_TITLE: "layer.tar.gz"},
                }
            ],
            "annotations": {
                ANNOTATION_CREATED: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                **(annotations or {}),
            },
        }
        body = json.dumps(manifest, separators=(",", ":")).encode()
        return client.put_manifest(target, body, OCI_MANIFEST)
