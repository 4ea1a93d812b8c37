"""The product's errors. Every surface (magics, CLI, REST, sidebar) renders these its own way;
none of them invents its own message for the same failure."""

from __future__ import annotations

from dataclasses import dataclass, field


class KaitoError(Exception):
    """Base of every error kaito-jupyter raises on purpose.

    `message` says what went wrong; `hint` (optional) says what to do about it.
    """

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


@dataclass(frozen=True)
class Issue:
    """One finding about a workspace: where it is, and what is wrong or worth knowing."""

    path: str  # field path, e.g. "tuning.input.urls[0]"; "" for the whole document
    message: str
    line: int | None = None  # 1-based YAML position, when the input came from YAML
    column: int | None = None
    severity: str = "error"  # "error" or "warning"
    source: str | None = None  # file name, when known

    def location(self) -> str:
        where = self.source or ""
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        return where

    def __str__(self) -> str:
        loc = self.location()
        field_ = self.path or "<document>"
        prefix = f"{loc}: " if loc else ""
        return f"{prefix}{self.severity}: {field_}: {self.message}"


@dataclass
class Findings:
    """Errors and warnings collected while checking a workspace."""

    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]


class ValidationError(KaitoError):
    """A workspace (or its YAML) is invalid. Carries every issue found, not only the first."""

    def __init__(self, issues: list[Issue], *, warnings: list[Issue] | None = None):
        self.issues = list(issues)
        self.warnings = list(warnings or [])
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} found"
        super().__init__(head + ":\n" + "\n".join(f"  - {i}" for i in self.issues))


class BackendError(KaitoError):
    """The store or cluster behind a backend failed or refused a request."""


class ProvisioningError(KaitoError):
    """GPU nodes could not be provisioned (quota, invalid size, cloud API failure)."""

    def __init__(
        self, message: str, *, reason: str = "ProvisioningFailed", hint: str | None = None
    ):
        super().__init__(message, hint=hint)
        self.reason = reason


class RuntimeFailure(KaitoError):
    """The inference server or tuning job failed; `reason` is a CamelCase condition reason."""

    def __init__(self, message: str, *, reason: str = "RuntimeFailed", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.reason = reason
