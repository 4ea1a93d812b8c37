"""Registry credentials from push/pull secrets: malformed secrets fail with a reason, and no
secret is ever printed."""

from __future__ import annotations

import base64
import json

import pytest
import yaml
from kaito_jupyter.runtimes import oci

from kaito_jupyter.errors import KaitoError


def _secret(data: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson", **data}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


MALFORMED = {
    "data-not-base64": _secret({"data": {".dockerconfigjson": "%%% not base64 %%%"}}),
    "data-not-utf8": _secret(
        {"data": {".dockerconfigjson": base64.b64encode(b"\xff\xfe").decode()}}
    ),
    "data-not-json": _secret({"data": {".dockerconfigjson": _b64("{auths: ")}}),
    "string-data-not-json": _secret({"stringData": {".dockerconfigjson": "{not json"}}),
    "config-not-an-object": _secret({"stringData": {".dockerconfigjson": "[1, 2]"}}),
    "data-not-a-mapping": _secret({"data": ["x"]}),
    "auths-not-a-mapping": {"auths": ["reg.io"]},
    "auth-not-base64": {"auths": {"reg.io": {"auth": "***"}}},
    "auth-not-a-string": {"auths": {"reg.io": {"auth": 42}}},
    "auth-without-colon": {"auths": {"reg.io": {"auth": _b64("justauser")}}},
    "password-not-a-string": {"auths": {"reg.io": {"username": "u", "password": 7}}},
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_secrets_fail_with_a_reason(tmp_path, name):
    path = tmp_path / "secret.yaml"
    path.write_text(yaml.safe_dump(MALFORMED[name]))
    with pytest.raises(KaitoError) as err:
        oci.load_credentials("reg.io", path)
    assert isinstance(err.value, oci.OCIError) and err.value.reason == "InvalidPushSecret", name
    assert str(path) in err.value.message


def test_a_mounted_secret_reads(tmp_path):
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    config = {"auths": {"https://reg.io/v1/": {"auth": _b64("kaito:pa:ss")}}}
    (mounted / ".dockerconfigjson").write_text(json.dumps(config))
    creds = oci.load_credentials("reg.io", mounted)
    assert creds.basic() == ("kaito", "pa:ss")


def test_credentials_never_print_their_secrets():
    creds = oci.Credentials(
        username="kaito", password="hunter2", identity_token="refresh-xyz", registry_token="tok-abc"
    )
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert "kaito" in text
        for secret in ("hunter2", "refresh-xyz", "tok-abc"):
            assert secret not in text
    assert "password=***" in repr(creds)
    assert repr(oci.Credentials(username="kaito")).count("None") == 3  # unset stays visible
