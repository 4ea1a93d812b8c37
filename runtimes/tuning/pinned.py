"""HTTP(S) GETs to an address that was already checked.

A URL's host is resolved once (sources.check_url) and every address is checked; the connection
then goes to one of those addresses, with the URL's host in the Host header, the TLS server
name and the certificate check. Letting the HTTP client resolve the name again would let a
second DNS answer (rebinding) point the same URL at an address that was never checked.

Proxies are not used: the name would be resolved by the proxy, out of our sight.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit


def ca_bundle() -> str:
    """The CAs to trust: REQUESTS_CA_BUNDLE or SSL_CERT_FILE when set, as requests does, else
    certifi's bundle."""
    import certifi

    return (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or certifi.where()
    )


def get(url: str, address: str, *, headers: dict[str, str], timeout: float):
    """GET `url` from `address` (an IP the caller checked); the urllib3 response, unread
    (stream it, then release_conn). Redirects are returned, not followed."""
    import urllib3

    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    options = {"timeout": urllib3.Timeout(connect=timeout, read=timeout), "retries": False}
    if https:
        pool = urllib3.HTTPSConnectionPool(
            address,
            port,
            server_hostname=host,  # SNI names the host, not the address
            assert_hostname=host,  # and the certificate must be the host's
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_bundle(),
            **options,
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, port, **options)
    default_port = port == (443 if https else 80)
    named = f"[{host}]" if ":" in host else host
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return pool.urlopen(
        "GET",
        target,
        headers={"Host": named if default_port else f"{named}:{port}", **headers},
        redirect=False,
        retries=False,
        preload_content=False,
    )
