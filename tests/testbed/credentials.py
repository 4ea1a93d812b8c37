"""Everything the control plane needs to trust and authenticate: a CA and a serving
certificate for kube-apiserver, the service-account signing key pair, and one bearer token
per identity (static token authentication, checked by RBAC like any other user).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# identity -> (user name, groups). The controller-manager and the scheduler get the users that
# the API server's bootstrap RBAC policy already grants their permissions to.
IDENTITIES = {
    "admin": ("kaito-testbed-admin", ["system:masters"]),
    "controller-manager": ("system:kube-controller-manager", []),
    "scheduler": ("system:kube-scheduler", []),
    # KWOK stands in for every kubelet; it needs node, lease and pod-status rights in bulk.
    "kwok": ("kaito-testbed-kwok", ["system:masters"]),
    # The simulated ARM materialises agent pools as nodes.
    "arm": ("kaito-testbed-arm", ["system:masters"]),
}

# Names the serving certificate answers to: loopback, and the in-cluster service names.
SERVING_NAMES = (
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass
class Credentials:
    directory: Path
    ca_file: Path
    serving_cert: Path
    serving_key: Path
    sa_private_key: Path
    sa_public_key: Path
    token_file: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def ca_pem(self) -> bytes:
        return self.ca_file.read_bytes()


def create(directory: Path) -> Credentials:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="kaito-jupyter test bed")
    serving = ca.issue_cert(*SERVING_NAMES)
    creds = Credentials(
        directory=directory,
        ca_file=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_private_key=directory / "sa.key",
        sa_public_key=directory / "sa.pub",
        token_file=directory / "tokens.csv",
    )
    ca.cert_pem.write_to_path(str(creds.ca_file))
    serving.cert_chain_pems[0].write_to_path(str(creds.serving_cert))
    serving.private_key_pem.write_to_path(str(creds.serving_key))

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    creds.sa_private_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    creds.sa_public_key.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    # kube-apiserver's --token-auth-file: token,user,uid,"group1,group2"
    lines = []
    for identity, (user, groups) in IDENTITIES.items():
        token = secrets.token_urlsafe(32)
        creds.tokens[identity] = token
        lines.append(f'{token},{user},{user},"{",".join(groups)}"')
    creds.token_file.write_text("\n".join(lines) + "\n")
    for path in (creds.serving_key, creds.sa_private_key, creds.token_file):
        path.chmod(0o600)
    return creds
