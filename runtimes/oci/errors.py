"""The error the OCI client raises: a RuntimeFailure whose reason the controller reports."""

from __future__ import annotations

from kaito_jupyter.errors import RuntimeFailure


class OCIError(RuntimeFailure):
    """A registry operation failed; `reason` says how (for the workspace's conditions)."""

    def __init__(self, message: str, *, reason: str = "RegistryError", hint: str | None = None):
        super().__init__(message, reason=reason, hint=hint)
