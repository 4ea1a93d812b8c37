"""The Entra ID (Azure AD) endpoints MSAL and azure-identity call, on the simulator's host.

MSAL first reads the tenant's OpenID discovery document
(`/{tenant}/v2.0/.well-known/openid-configuration`) for the token endpoint, then posts a
client-credentials grant to it. Instance discovery (a call to the public cloud asking whether
the authority host is a known one) is what a non-public authority must skip: the client sets
`disable_instance_discovery`, which kaito-jupyter's KAITO_AZURE_DISABLE_INSTANCE_DISCOVERY
setting does.

Tokens are opaque random strings; the simulator remembers each one's audience and expiry and
ARM requests must carry one for its audience.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass


class TokenError(Exception):
    def __init__(self, status: int, error: str, description: str, code: int):
        super().__init__(description)
        self.status = status
        self.body = {
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        }


@dataclass
class IssuedToken:
    audience: str
    client_id: str
    expires_at: float


class TokenIssuer:
    def __init__(self, tenant_id: str, client_id: str, client_secret: str, lifetime: int = 3600):
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.lifetime = lifetime
        self._tokens: dict[str, IssuedToken] = {}
        self._lock = threading.Lock()

    def openid_configuration(self, base_url: str, tenant: str) -> dict:
        root = f"{base_url}/{tenant}"
        return {
            "issuer": f"{root}/v2.0",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "tenant_region_scope": "NA",
        }

    def known_tenant(self, tenant: str) -> bool:
        return tenant in (self.tenant_id, "organizations", "common")

    def issue(self, tenant: str, form: dict[str, str]) -> dict:
        """Answer a token request (form fields already decoded) or raise TokenError."""
        if not self.known_tenant(tenant):
            raise TokenError(
                400,
                "invalid_request",
                f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the "
                "correct tenant ID and are signing into the correct cloud.",
                90002,
            )
        if form.get("grant_type") != "client_credentials":
            raise TokenError(
                400,
                "unsupported_grant_type",
                "AADSTS70003: The app requested an unsupported grant type "
                f"'{form.get('grant_type')}'.",
                70003,
            )
        if form.get("client_id") != self.client_id:
            raise TokenError(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{form.get('client_id')}' was not "
                f"found in the directory '{self.tenant_id}'.",
                700016,
            )
        if form.get("client_secret") != self.client_secret:
            raise TokenError(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent "
                f"in the request is the client secret value, not the client secret ID, for a "
                f"secret added to app '{self.client_id}'.",
                7000215,
            )
        scopes = (form.get("scope") or "").split()
        resource = [s for s in scopes if s.endswith("/.default")]
        if len(resource) != 1:
            raise TokenError(
                400,
                "invalid_scope",
                "AADSTS1002012: The provided value for scope is not valid. Client credential "
                "flows must have a scope value with /.default suffixed to the resource "
                "identifier (application ID URI).",
                1002012,
            )
        audience = normalise_audience(resource[0].removesuffix("/.default"))
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = IssuedToken(audience, self.client_id, time.time() + self.lifetime)
        return {
            "token_type": "Bearer",
            "expires_in": self.lifetime,
            "ext_expires_in": self.lifetime,
            "access_token": token,
        }

    def check(self, authorization: str | None, audience: str) -> str | None:
        """None when the header carries a live token for `audience`, else why not."""
        if not authorization:
            return "the 'Authorization' header is missing"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "the 'Authorization' header is not a bearer token"
        with self._lock:
            issued = self._tokens.get(token.strip())
        if issued is None:
            return "the token was not issued by this authority"
        if issued.expires_at < time.time():
            return "the token has expired"
        if issued.audience != normalise_audience(audience):
            return f"the token's audience {issued.audience!r} is not {audience!r}"
        return None


def normalise_audience(audience: str) -> str:
    return audience.rstrip("/").lower()
