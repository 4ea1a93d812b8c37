"""Which hosts a workspace may reach: data URLs over http(s) to public hosts only, and image
registries that are public unless configured.

A tuning job runs inside the cluster; a URL naming localhost, a private or link-local address
or a cloud metadata endpoint would let a workspace reach things its author should not (SSRF).
Hostnames are checked as written; the runtime re-checks the resolved address before fetching.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
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


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 prefixes that carry an IPv4 address in their last 32 bits: NAT64 (the well-known and the
# local-use prefix) and the deprecated IPv4-compatible form. A gateway forwards them to the IPv4.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """IPv4 as glibc's inet_aton (and so curl and most HTTP clients) reads it: one to four parts,
    each decimal, octal (leading 0) or hex (0x); the last part fills the remaining bytes, so
    `127.1` is 127.0.0.1 and `0x7f.1` is too."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        lowered = part.lower()
        if lowered.startswith("0x"):
            digits, base = lowered[2:], 16
        elif len(part) > 1 and part.startswith("0"):
            digits, base = part, 8
        else:
            digits, base = part, 10
        # int() would also take signs, spaces and underscores, which no resolver does.
        if not digits or any(c not in "0123456789abcdef"[:base] for c in digits):
            return None
        values.append(int(digits, base))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for i, value in enumerate(head):
        number += value << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def parse_ip(host: str) -> IPAddress | None:
    """An IP literal in any form browsers and curl accept (dotted, short, octal, hex, one
    integer; IPv6 with or without brackets), else None."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    return _inet_aton(host)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """(how, the IPv4 address) an IPv6 address forwards to: IPv4-mapped, NAT64, 6to4, or the
    IPv4-compatible form; None for a plain IPv6 address."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if any(ip in net for net in _NAT64):
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip in _COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves, not IPv4
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _address_reason(ip: IPAddress) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.teredo is not None:
            return f"is a Teredo tunnel address ({ip}), which reaches hosts it does not name"
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            how, inner = embedded
            reason = _address_reason(inner)
            if reason is not None:
                return f"{reason} ({how} as {ip})"
    if ip.is_loopback or ip.is_unspecified:
        return f"points at this machine ({ip})"
    if ip.is_link_local:
        return f"points at a link-local address ({ip}), where cloud metadata services live"
    if ip.is_private or ip.is_reserved or ip.is_multicast or not ip.is_global:
        return f"points at a private or reserved address ({ip})"
    return None


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
    return None if ip is None else _address_reason(ip)


def tolerable(reason: str) -> bool:
    """Whether configuration may let a blocked host through: private and loopback hosts may be
    allowed, metadata endpoints and link-local addresses (cloud credentials live there) never."""
    return "metadata" not in reason and "link-local" not in reason


def _hostname(address: str) -> str:
    """`host[:port]` (IPv6 in brackets) -> the host, without brackets."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    return address.partition(":")[0]


def registry_problem(registry: str, *, allowed: Iterable[str] = ()) -> str | None:
    """Why an image registry (`host[:port]`) must not be reached, or None.

    Loopback, private, link-local and cluster-internal registries are refused unless `allowed`
    names them, by `host:port` or by `host` for every port (the `allowed_private_registries`
    setting). A registry on a metadata address is refused whatever the setting."""
    host = _hostname(registry)
    reason = blocked_reason(host)
    if reason is None:
        return None
    if tolerable(reason):
        names = {a.strip().lower() for a in allowed}
        bracketed = f"[{host}]" if ":" in host else host
        if {registry.lower(), host.lower(), bracketed.lower()} & names:
            return None
    return (
        f"registry {registry} {reason}; private registries are refused unless listed in the "
        "allowed_private_registries setting (KAITO_ALLOWED_PRIVATE_REGISTRIES)"
    )


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
