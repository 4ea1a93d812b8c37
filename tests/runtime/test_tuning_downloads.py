"""The tuning job's URL downloads against hosts that misbehave (tests/testbed/adversary.py): a
name that resolves elsewhere the second time (DNS rebinding), transfers dropped mid-body, a
Retry-After date, TLS to the checked address under the URL's name."""

from __future__ import annotations

import email.utils
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme
from kaito_jupyter.runtimes.tuning import sources

from kaito_jupyter.errors import RuntimeFailure
from tests.testbed.adversary import Adversary, dropping, ranged, reply, sequence

ROWS = b"".join(
    json.dumps(
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
    ).encode()
    + b"\n"
    for i in range(40000)
)  # fmt: skip; about 3 MiB, more than one 1 MiB read


@pytest.fixture
def private_ok(monkeypatch):
    monkeypatch.setenv(sources.ALLOW_PRIVATE_ENV, "1")


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    """The backoffs the download asked for, recorded instead of slept."""
    asked: list[float] = []
    monkeypatch.setattr(sources.time, "sleep", asked.append)
    return asked


def resolving(monkeypatch, name: str, answers: list[list[str]]) -> list[str]:
    """Make `name` resolve to each list of `answers` in turn (the last repeats), as a DNS server
    under an attacker's control would; other names resolve as usual. Returns the call log."""
    real = socket.getaddrinfo
    calls: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != name:
            return real(host, port, *args, **kwargs)
        calls.append(host)
        addresses = answers[min(len(calls), len(answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


def test_dns_rebinding_cannot_switch_the_address(tmp_path, monkeypatch, private_ok):
    """The name resolves to a data server the first time and to an internal one (here
    127.0.0.2, counted as a metadata endpoint) after: the download connects to the address
    that was checked, and the internal host sees nothing."""
    data = Adversary()
    data.on("GET", r"/train.jsonl", reply(200, ROWS))
    internal = Adversary("127.0.0.2", port=data.port)
    internal.on("GET", r"/", reply(200, b"secrets"))
    blocked = sources.network.blocked_reason

    def reason(host):
        return "points at a cloud metadata endpoint" if host == "127.0.0.2" else blocked(host)

    monkeypatch.setattr(sources.network, "blocked_reason", reason)
    calls = resolving(monkeypatch, "data.example", [["127.0.0.1"], ["127.0.0.2"]])
    try:
        url = f"http://data.example:{data.port}/train.jsonl"
        path = sources.download(url, tmp_path, index=0, budget=sources.DiskBudget(10**9))
        assert path.read_bytes() == ROWS
        assert calls == ["data.example"], "the name was resolved again after the check"
        assert not internal.requests
        assert data.seen("GET", "/train.jsonl")[0].headers["host"] == f"data.example:{data.port}"
        # Every address of one answer is checked: one internal address refuses the URL.
        resolving(monkeypatch, "both.example", [["127.0.0.1", "127.0.0.2"]])
        with pytest.raises(RuntimeFailure) as err:
            sources.download(
                f"http://both.example:{data.port}/train.jsonl",
                tmp_path,
                index=1,
                budget=sources.DiskBudget(10**9),
            )
        assert err.value.reason == "InvalidInputURL" and "127.0.0.2" in err.value.message
        assert not internal.requests
    finally:
        data.close()
        internal.close()


def test_redirects_are_resolved_and_checked_again(tmp_path, monkeypatch, private_ok):
    data = Adversary()
    data.on("GET", r"/moved", reply(302, b"", {"Location": "http://169.254.169.254/latest"}))
    try:
        with pytest.raises(RuntimeFailure) as err:
            sources.download(
                f"{data.url}/moved", tmp_path, index=0, budget=sources.DiskBudget(10**9)
            )
        assert err.value.reason == "InvalidInputURL" and "link-local" in err.value.message
    finally:
        data.close()


def test_a_dropped_download_resumes_with_a_range(tmp_path, private_ok, waits):
    etag = {"ETag": '"rows-v1"'}
    data = Adversary()
    data.on(
        "GET",
        r"/train.jsonl",
        sequence(dropping(ROWS, after=len(ROWS) // 2, headers=etag), ranged(ROWS, etag)),
    )
    try:
        path = sources.download(
            f"{data.url}/train.jsonl", tmp_path, index=0, budget=sources.DiskBudget(10**9)
        )
        assert path.read_bytes() == ROWS
        first, second = data.seen("GET", "/train.jsonl")
        assert "range" not in first.headers
        start = int(second.headers["range"].removeprefix("bytes=").rstrip("-"))
        assert 0 < start <= len(ROWS) // 2 and second.headers["if-range"] == '"rows-v1"'
        assert len(waits) == 1 and 0 < waits[0] <= 0.5  # backoff with jitter
        assert not list(tmp_path.glob("*.part"))
    finally:
        data.close()


def test_a_download_that_keeps_dropping_fails_with_a_reason(tmp_path, private_ok, waits):
    data = Adversary()
    data.on("GET", r"/train.jsonl", dropping(ROWS, after=1000))
    try:
        for index in range(3):
            with pytest.raises(RuntimeFailure) as err:
                sources.download(
                    f"{data.url}/train.jsonl",
                    tmp_path,
                    index=index,
                    budget=sources.DiskBudget(10**9),
                    retries=2,
                )
            assert err.value.reason == "DatasetDownloadFailed"
            assert "after 3 attempts" in err.value.message and err.value.hint
        assert not list(tmp_path.iterdir()), "a partial file was left behind"
        assert len(waits) == 6
        firsts, seconds = waits[0::2], waits[1::2]
        assert all(0.25 <= w <= 0.5 for w in firsts) and all(0.5 <= w <= 1 for w in seconds)
        assert len(set(firsts)) > 1, "no jitter: every client would come back at once"
    finally:
        data.close()


def test_retry_after_as_an_http_date_is_honoured(tmp_path, private_ok, waits):
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    data = Adversary()
    data.on(
        "GET",
        r"/train.jsonl",
        sequence(reply(503, b"busy", {"Retry-After": when}), reply(200, ROWS)),
    )
    try:
        path = sources.download(
            f"{data.url}/train.jsonl", tmp_path, index=0, budget=sources.DiskBudget(10**9)
        )
        assert path.read_bytes() == ROWS
        [wait] = waits
        assert 15 < wait <= 20  # until the date the server named
    finally:
        data.close()


def test_https_goes_to_the_checked_address_under_the_urls_name(tmp_path, monkeypatch, private_ok):
    ca = trustme.CA()
    cert = ca.issue_cert("data.example")
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(ROWS)))
            self.end_headers()
            self.wfile.write(ROWS)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    seen_names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: seen_names.append(name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    resolving(monkeypatch, "data.example", [["127.0.0.1"]])
    try:
        url = f"https://data.example:{server.server_address[1]}/train.jsonl"
        path = sources.download(url, tmp_path, index=0, budget=sources.DiskBudget(10**9))
        assert path.read_bytes() == ROWS and seen_names == ["data.example"]
        # A certificate for another name is refused, though the address is the same.
        resolving(monkeypatch, "other.example", [["127.0.0.1"]])
        with pytest.raises(RuntimeFailure) as err:
            sources.download(
                f"https://other.example:{server.server_address[1]}/train.jsonl",
                tmp_path,
                index=1,
                budget=sources.DiskBudget(10**9),
                retries=0,
            )
        assert err.value.reason == "DatasetDownloadFailed"
        assert "doesn't match 'data.example'" in err.value.message
    finally:
        server.shutdown()
