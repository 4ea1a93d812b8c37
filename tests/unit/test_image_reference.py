"""One image-reference grammar: admission (api.validation) and the OCI client (runtimes/oci) read
references and digests the same way, from kaito_jupyter.api.image_reference."""

from __future__ import annotations

import pytest
from kaito_jupyter.runtimes import oci

from kaito_jupyter.api import image_reference
from kaito_jupyter.api.validation import image_problem

SHA256 = "sha256:" + "ab" * 32
SHA512 = "sha512:" + "cd" * 64

VALID = [
    "ubuntu",
    "team/adapter:1.0",
    "myacr.azurecr.io/adapters/phi-3:0.0.1",
    "localhost:5000/a/b",
    "[::1]:5000/a/b:v1",
    f"ghcr.io/team/a@{SHA256}",
    f"ghcr.io/team/a:1.0@{SHA512}",
    "registry-1.docker.io/library/ubuntu:22.04",
]
INVALID = [
    "my_reg.io/a:1",  # underscores are not in host names
    "evil.example#x.io/a:1",
    "host.io:99999999/a",
    "reg.io/a:" + "t" * 129,
    "reg.io/a@" + SHA256.upper().replace("SHA256", "sha256"),  # upper-case hex
    "reg.io/a@md5:" + "0" * 32,  # an algorithm nobody can verify here: fail closed
    "reg.io/a@sha256:" + "0" * 63,
    "reg.io/a@sha512:" + "0" * 64,  # the wrong length for its algorithm
    "reg.io/a@sha256:../../etc/passwd",
    "reg.io/a@/home/x",
    "reg.io/a//b",
    "reg.io/" + "a" * 300,
]


@pytest.mark.parametrize("ref", VALID)
def test_valid_references_are_valid_everywhere(ref):
    assert image_problem(ref) is None
    parsed = oci.parse_reference(ref)
    assert parsed.repository and (parsed.tag or parsed.digest)


@pytest.mark.parametrize("ref", INVALID)
def test_invalid_references_are_invalid_everywhere(ref):
    problem = image_problem(ref)
    assert problem is not None and problem[0] == "error", problem
    with pytest.raises(oci.OCIError) as err:
        oci.parse_reference(ref)
    assert err.value.reason == "InvalidImage"


def test_digests_are_sha256_or_sha512_in_lower_case_hex():
    assert image_reference.digest_problem(SHA256) is None
    assert image_reference.digest_problem(SHA512) is None
    for bad, why in (
        ("sha384:" + "0" * 96, "not supported"),
        ("sha256:" + "A" * 64, "64 lower-case hex digits"),
        ("sha256", "not a digest"),
        (None, "not a digest"),
        ("/home/x", "not a digest"),
    ):
        assert why in image_reference.digest_problem(bad), bad


def test_docker_defaults_and_what_looks_like_an_image(tmp_path):
    assert str(oci.parse_reference("ubuntu")) == "docker.io/library/ubuntu:latest"
    assert str(oci.parse_reference("oci://localhost:5000/a")) == "localhost:5000/a:latest"
    from kaito_jupyter.runtimes.oci.reference import looks_like_image

    assert looks_like_image("myacr.azurecr.io/data:1") and looks_like_image("oci://x.io/a")
    assert not looks_like_image("data/train.parquet") and not looks_like_image("ubuntu")
    assert not looks_like_image("https://example.com/a.parquet")
    (tmp_path / "reg.io").mkdir()
    (tmp_path / "reg.io" / "a").write_text("")
    assert not looks_like_image(str(tmp_path / "reg.io" / "a"))
