"""Which URLs a workspace may fetch data from: http(s) to public hosts only.

A tuning job runs inside the cluster; a URL naming localhost, a private or link-local address
or a cloud metadata endpoint would let a workspace reach things its author should not (SSRF).
Hostnames are checked as written; the runtime re-checks the resolved address before fetching.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# Cloud instance-metadata endpoints reachable by name (their IPs are link-local, caught below).
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
    }
)


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP literal in any form browsers and curl accept (dotted, integer, hex), else None."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:  # 2130706433, 0x7f000001: both mean 127.0.0.1 to most HTTP clients
        number = int(host, 0)
    except ValueError:
        return None
    return ipaddress.IPv4Address(number) if 0 <= number < 2**32 else None


def blocked_reason(host: str) -> str | None:
    """Why a URL host must not be fetched, or None if it is a public host."""
    host = host.lower().rstrip(".")
    if not host:
        return "has no host"
    if host == "localhost" or host.endswith(".localhost"):
        return "points at localhost"
    if host in METADATA_HOSTS:
        return "points at a cloud metadata endpoint"
    if host.endswith((".internal", ".local", ".svc", ".cluster.local")):
        return "points at a private (cluster or LAN) name"
    ip = parse_ip(host)
    if ip is None:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_unspecified:
        return f"points at this machine ({ip})"
    if ip.is_link_local:
        return f"points at a link-local address ({ip}), where cloud metadata services live"
    if ip.is_private or ip.is_reserved or ip.is_multicast or not ip.is_global:
        return f"points at a private or reserved address ({ip})"
    return None


def check_url(url: str) -> str | None:
    """None if the URL may be fetched; otherwise what is wrong with it, for a message."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        scheme = parts.scheme or "no scheme"
        return f"must use http or https, not {scheme}"
    if parts.username or parts.password:
        return "must not embed credentials; put them in a secret"
    reason = blocked_reason(host)
    return f"{reason}; only public hosts are allowed" if reason else None
