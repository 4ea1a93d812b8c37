"""Which hosts a workspace may reach: data URLs and image registries (SSRF at admission)."""

from __future__ import annotations

import pytest

from kaito_jupyter import api
from kaito_jupyter.api import network

from .samples import INFERENCE, TUNING, with_

# Every spelling of an address that HTTP clients (curl, browsers, glibc's inet_aton) accept.
THIS_MACHINE = [
    "127.0.0.1",
    "127.1",  # short form: the last part fills the remaining bytes
    "127.0.1",
    "0177.0.0.1",  # octal parts
    "0x7f.1",  # hex parts
    "0x7f.0.0.1",
    "0x7F000001",
    "2130706433",  # one decimal number
    "017700000001",  # one octal number
    "0",
    "[::1]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",  # IPv4-compatible IPv6 (deprecated, still routed by some stacks)
    "[64:ff9b::127.0.0.1]",  # NAT64, the well-known prefix
    "[64:ff9b:1::7f00:1]",  # NAT64, the local-use prefix
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
]
PRIVATE = [
    "10.0.0.5",
    "10.1",  # 10.0.0.1
    "012.0.0.1",  # octal 10.0.0.1
    "0xa9fea9fe",  # 169.254.169.254, the metadata address
    "169.254.43518",  # the same, short form
    "[::ffff:169.254.169.254]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:a9fe:a9fe::1]",  # 6to4 of the metadata address
    "[2002:c0a8:101::1]",  # 6to4 of 192.168.1.1
    "[fd00::1]",
    "[fe80::1]",
]
TEREDO = ["[2001:0:4136:e378:8000:63bf:3fff:fdd2]"]
PUBLIC = ["example.com", "8.8.8.8", "[2606:4700:4700::1111]", "[2002:808:808::1]", "1.2.3"]


@pytest.mark.parametrize("host", THIS_MACHINE + PRIVATE + TEREDO)
def test_every_spelling_of_a_blocked_address_is_refused(host):
    problem = network.check_url(f"http://{host}/data.parquet")
    assert problem is not None and problem.endswith("only public hosts are allowed"), host


@pytest.mark.parametrize("host", THIS_MACHINE)
def test_loopback_spellings_name_the_address(host):
    reason = network.blocked_reason(host)
    assert reason is not None and "this machine" in reason, (host, reason)


def test_embedded_addresses_are_named():
    assert "169.254.169.254" in network.blocked_reason("2002:a9fe:a9fe::1")
    assert "127.0.0.1" in network.blocked_reason("64:ff9b::7f00:1")
    assert "Teredo" in network.blocked_reason("2001:0:4136:e378:8000:63bf:3fff:fdd2")


@pytest.mark.parametrize("host", PUBLIC)
def test_public_hosts_pass(host):
    assert network.check_url(f"https://{host}/data.parquet") is None


def test_a_short_form_in_a_workspace_is_refused_at_admission():
    ws = with_(TUNING, tuning__input__urls=["http://0x7f.1:8080/train.parquet"])
    with pytest.raises(api.ValidationError) as info:
        api.check_dict(ws)
    (issue,) = info.value.issues
    assert issue.path == "tuning.input.urls[0]" and "this machine (127.0.0.1)" in issue.message


REGISTRIES = [
    ("localhost:5000/adapters/a:1", "localhost"),
    ("127.0.0.1:5000/adapters/a:1", "this machine"),
    ("[::1]:5000/adapters/a:1", "this machine"),
    ("10.0.0.7/adapters/a:1", "private"),
    ("169.254.169.254/adapters/a:1", "link-local"),
    ("registry.kube-system.svc.cluster.local:5000/adapters/a:1", "private"),
    ("registry.local/adapters/a:1", "private"),
]


@pytest.mark.parametrize(("image", "why"), REGISTRIES)
def test_private_registries_are_refused_unless_allowed(image, why):
    ws = with_(INFERENCE, inference__adapters=[{"source": {"name": "a", "image": image}}])
    with pytest.raises(api.ValidationError) as info:
        api.check_dict(ws)
    (issue,) = info.value.issues
    assert issue.path == "inference.adapters[0].source.image"
    assert why in issue.message and "allowed_private_registries" in issue.message
    host = image.split("/", 1)[0]
    if why == "link-local":  # where metadata services live: never allowed
        with pytest.raises(api.ValidationError):
            api.check_dict(ws, allowed_registries=[host])
        return
    # Allowed by host:port, or by host for every port.
    assert api.check_dict(ws, allowed_registries=[host]).workspace
    assert api.check_dict(ws, allowed_registries=[host.rsplit(":", 1)[0]]).workspace


def test_public_registries_need_no_allowance():
    for image in ("myacr.azurecr.io/adapters/a:1", "ghcr.io/team/a@sha256:" + "a" * 64, "ubuntu"):
        ws = with_(INFERENCE, inference__adapters=[{"source": {"name": "a", "image": image}}])
        assert api.check_dict(ws).workspace
    policy = network.registry_problem
    assert policy("127.0.0.1:5000", allowed=["127.0.0.1:5001"]) is not None  # another port
    assert policy("127.0.0.1:5000", allowed=["127.0.0.1:5000"]) is None
