"""Where training data comes from: http(s) URLs, OCI images, local files and directories.

Each input becomes local data files under the job's work directory. URLs obey the workspace
API's SSRF rules (kaito_jupyter.api.network), re-checked on every address the host resolves to
and on every redirect, and the connection goes to the address that was checked (pinned.py);
downloads resume or are retried with backoff, and are bounded by the disk budget.

Loopback and private addresses are refused unless KAITO_TUNING_ALLOW_PRIVATE_URLS=1: an explicit
switch for tests and air-gapped clusters that serve data from inside, announced on stderr when on.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from kaito_jupyter.runtimes import retry
from kaito_jupyter.runtimes.oci.reference import looks_like_image

from kaito_jupyter.api import network
from kaito_jupyter.errors import RuntimeFailure

from . import pinned

EXTENSIONS = (".parquet", ".csv", ".json", ".jsonl")
ALLOW_PRIVATE_ENV = "KAITO_TUNING_ALLOW_PRIVATE_URLS"
_CHUNK = 1 << 20
_RETRY_STATUS = (429, 500, 502, 503, 504)


def data_files(root: Path) -> list[Path]:
    """The data files in a file or directory (recursively), in a stable order."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(EXTENSIONS))


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def private_allowed() -> bool:
    return os.environ.get(ALLOW_PRIVATE_ENV, "").lower() in ("1", "true", "yes")


def _tolerated(reason: str | None) -> bool:
    """Whether a blocked host is let through: only with the switch on, and never a metadata or
    link-local address (those are the cloud credentials an SSRF goes after)."""
    if reason is None:
        return True
    return private_allowed() and network.tolerable(reason)


def check_url(url: str) -> list[str]:
    """Refuse a URL the workspace API would refuse; resolve its host once and refuse it if any
    address is private. Returns the checked addresses: connect to those (pinned.get), never
    to what a second resolution says."""
    parts = urlsplit(url)
    problem = network.check_url(url)
    host_reason = network.blocked_reason(parts.hostname or "") if parts.hostname else None
    if problem and not (host_reason and _tolerated(host_reason)):
        raise RuntimeFailure(f"input URL {url} {problem}", reason="InvalidInputURL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise RuntimeFailure(
            f"cannot resolve the host of input URL {url}: {exc}", reason="DatasetDownloadFailed"
        ) from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        reason = network.blocked_reason(address)
        if not _tolerated(reason):
            raise RuntimeFailure(
                f"input URL {url} resolves to {address}, which {reason}; only public hosts are allowed",
                reason="InvalidInputURL",
            )
    return addresses


def _get(url: str, headers: dict[str, str], timeout: float):
    """GET `url`, following redirects (at most 5), each target resolved, checked and connected
    to as checked; the response of the last one."""
    import urllib3

    for _ in range(6):
        failure: Exception | None = None
        for address in check_url(url):
            try:
                response = pinned.get(url, address, headers=headers, timeout=timeout)
                break
            except urllib3.exceptions.NewConnectionError as exc:  # the next address, if any
                failure = exc
        else:
            assert failure is not None  # getaddrinfo gives an address or raises
            raise failure
        if response.status not in (301, 302, 303, 307, 308):
            return response
        location = response.headers.get("Location")
        response.release_conn()
        if not location:
            raise RuntimeFailure(
                f"input URL {url} redirected nowhere", reason="DatasetDownloadFailed"
            )
        url = urljoin(url, location)
    raise RuntimeFailure(f"too many redirects fetching {url}", reason="DatasetDownloadFailed")


def _file_name(url: str, index: int, content_type: str) -> str:
    name = unquote(Path(urlsplit(url).path).name) or f"input-{index}"
    if not name.lower().endswith(EXTENSIONS):
        kind = content_type.split(";")[0].strip().lower()
        guessed = {"application/json": ".json", "text/csv": ".csv",
                   "application/x-ndjson": ".jsonl", "application/jsonl": ".jsonl",
                   "application/vnd.apache.parquet": ".parquet"}.get(kind, "")  # fmt: skip
        name += guessed
    return f"{index:03d}-{name}"


def download(
    url: str,
    dest_dir: Path,
    *,
    index: int,
    budget: DiskBudget,
    retries: int = 4,
    timeout: float = 30,
) -> Path:
    """Fetch one URL into dest_dir, following (checked) redirects. Transient failures (a refused
    or dropped connection, 429, 5xx) are retried after the server's Retry-After or a backoff
    with jitter; a transfer that dropped part-way resumes with a Range request when the server
    names the version it sends (ETag or Last-Modified), else starts over."""
    import urllib3

    target: Path | None = None
    written = 0
    validator: str | None = None  # what the partial file holds, for If-Range
    last: Exception | str = ""
    wait: str | None = None  # the last answer's Retry-After
    try:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(retry.delay(attempt, wait))
                wait = None
            resume = validator and written
            headers = {"Range": f"bytes={written}-", "If-Range": validator} if resume else {}
            try:
                response = _get(url, headers, timeout)
            except urllib3.exceptions.HTTPError as exc:
                last = exc
                continue
            try:
                if response.status in _RETRY_STATUS:
                    last, wait = f"HTTP {response.status}", response.headers.get("Retry-After")
                    continue
                if response.status not in (200, 206):
                    raise RuntimeFailure(
                        f"input URL {url} answered HTTP {response.status}",
                        reason="DatasetDownloadFailed",
                        hint="check that the URL is right and publicly readable",
                    )
                if target is None:
                    name = _file_name(url, index, response.headers.get("Content-Type", ""))
                    target = dest_dir / name
                resumed = response.status == 206 and response.headers.get(
                    "Content-Range", ""
                ).startswith(f"bytes {written}-")
                if not resumed:
                    written = 0
                # Resumable when the server names this version and sends the bytes as stored.
                validator = (
                    None
                    if response.headers.get("Content-Encoding")
                    else response.headers.get("ETag") or response.headers.get("Last-Modified")
                )
                # A declared size over budget fails before the download; the count catches liars.
                budget.check(written + int(response.headers.get("Content-Length") or 0), what=url)
                partial = target.with_name(target.name + ".part")
                with open(partial, "ab" if resumed else "wb") as handle:
                    for chunk in response.stream(_CHUNK):
                        written += len(chunk)
                        budget.check(written, what=url)
                        handle.write(chunk)
            except urllib3.exceptions.HTTPError as exc:  # dropped mid-body, a read timeout
                last = exc
                continue
            finally:
                response.release_conn()
            budget.add(written)
            partial.replace(target)
            return target
    except BaseException:
        if target is not None:
            target.with_name(target.name + ".part").unlink(missing_ok=True)
        raise
    if target is not None:
        target.with_name(target.name + ".part").unlink(missing_ok=True)
    raise RuntimeFailure(
        f"could not download input URL {url} after {retries + 1} attempts: {last}",
        reason="DatasetDownloadFailed",
        hint="check that the host is reachable from the cluster",
    )


class DiskBudget:
    """How many bytes of input data the job may store; overruns fail with DatasetTooLarge."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def check(self, size: int, *, what: str) -> None:
        """Fail if `size` more bytes would not fit."""
        if self.used + size > self.limit:
            raise RuntimeFailure(
                f"the dataset is too large for the disk budget: {what} needs "
                f"{_mib(self.used + size)} but the budget is {_mib(self.limit)}",
                reason="DatasetTooLarge",
                hint="use a smaller dataset, or raise --max-dataset-bytes (KAITO_TUNING_MAX_DATASET_BYTES)",
            )

    def add(self, size: int) -> None:
        self.used += size

    def take(self, size: int, *, what: str) -> None:
        self.check(size, what=what)
        self.add(size)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def default_budget(work_dir: Path) -> int:
    """Half the free space of the work directory's disk, unless configured."""
    configured = os.environ.get("KAITO_TUNING_MAX_DATASET_BYTES")
    if configured:
        return int(configured)
    work_dir.mkdir(parents=True, exist_ok=True)
    stat = os.statvfs(work_dir)
    return stat.f_bavail * stat.f_frsize // 2


def fetch(
    inputs: list[str], work_dir: Path, *, budget: DiskBudget, pull_secret: str | None = None
) -> list[Path]:
    """Bring every input to local data files; the list is in input order."""
    files: list[Path] = []
    download_dir = work_dir / "inputs"
    download_dir.mkdir(parents=True, exist_ok=True)
    if private_allowed():
        print(f"{ALLOW_PRIVATE_ENV} is set: private and loopback URLs are allowed", file=sys.stderr)
    for index, item in enumerate(inputs):
        item = item.strip()
        if is_url(item):
            path = download(item, download_dir, index=index, budget=budget)
            files.append(path)
            continue
        if looks_like_image(item):
            from kaito_jupyter.runtimes import oci

            root = oci.pull_directory(item, download_dir / f"image-{index:03d}", secret=pull_secret)
            found = data_files(root)
            budget.take(sum(p.stat().st_size for p in found), what=item)
            if not found:
                raise RuntimeFailure(
                    f"image {item} holds no data files ({', '.join(EXTENSIONS)})",
                    reason="EmptyDataset",
                )
            files.extend(found)
            continue
        path = Path(item).expanduser()
        if not path.exists():
            raise RuntimeFailure(
                f"input {item} is neither a URL, an image reference nor an existing path",
                reason="InvalidInput",
            )
        found = data_files(path)
        if not found:
            raise RuntimeFailure(
                f"{path} holds no data files ({', '.join(EXTENSIONS)})", reason="EmptyDataset"
            )
        budget.take(sum(p.stat().st_size for p in found), what=str(path))
        files.extend(found)
    return files
