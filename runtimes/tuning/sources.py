"""Where training data comes from: http(s) URLs, OCI images, local files and directories.

Each input becomes local data files under the job's work directory. URLs obey the workspace
API's SSRF rules (kaito_jupyter.api.network), re-checked on every address the host resolves to
and on every redirect; downloads are retried with backoff and bounded by the disk budget.

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

from kaito_jupyter.runtimes.oci.reference import looks_like_image

from kaito_jupyter.api import network
from kaito_jupyter.errors import RuntimeFailure

EXTENSIONS = (".parquet", ".csv", ".json", ".jsonl")
ALLOW_PRIVATE_ENV = "KAITO_TUNING_ALLOW_PRIVATE_URLS"
_CHUNK = 1 << 20


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


def check_url(url: str) -> None:
    """Refuse a URL the workspace API would refuse, and hosts resolving to private addresses."""
    parts = urlsplit(url)
    problem = network.check_url(url)
    host_reason = network.blocked_reason(parts.hostname or "") if parts.hostname else None
    if problem and not (host_reason and _tolerated(host_reason)):
        raise RuntimeFailure(f"input URL {url} {problem}", reason="InvalidInputURL")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise RuntimeFailure(
            f"cannot resolve the host of input URL {url}: {exc}", reason="DatasetDownloadFailed"
        ) from exc
    for info in infos:
        address = info[4][0]
        reason = network.blocked_reason(address)
        if not _tolerated(reason):
            raise RuntimeFailure(
                f"input URL {url} resolves to {address}, which {reason}; only public hosts are allowed",
                reason="InvalidInputURL",
            )


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
    """Fetch one URL into dest_dir, following (checked) redirects, retrying transient failures."""
    import requests

    check_url(url)
    last: Exception | str = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(0.5 * 2 ** (attempt - 1), 8))
        current = url
        try:
            for _ in range(6):  # redirects, each re-checked
                response = requests.get(
                    current, stream=True, timeout=timeout, allow_redirects=False
                )
                if response.is_redirect:
                    current = urljoin(current, response.headers["Location"])
                    check_url(current)
                    response.close()
                    continue
                break
            else:
                raise RuntimeFailure(
                    f"too many redirects fetching {url}", reason="DatasetDownloadFailed"
                )
            if response.status_code in (429, 500, 502, 503, 504):
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                raise RuntimeFailure(
                    f"input URL {url} answered HTTP {response.status_code}",
                    reason="DatasetDownloadFailed",
                    hint="check that the URL is right and publicly readable",
                )
            # A declared size over budget fails before the download; the count catches liars.
            budget.check(int(response.headers.get("Content-Length") or 0), what=url)
            target = dest_dir / _file_name(url, index, response.headers.get("Content-Type", ""))
            partial = target.with_name(target.name + ".part")
            written = 0
            try:
                with open(partial, "wb") as handle:
                    for chunk in response.iter_content(_CHUNK):
                        written += len(chunk)
                        budget.check(written, what=url)
                        handle.write(chunk)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            budget.add(written)
            partial.replace(target)
            return target
        except requests.RequestException as exc:
            last = exc
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
