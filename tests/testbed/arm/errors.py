"""ARM error responses, shaped as ARM and AKS send them: `{"error": {"code", "message"}}`.

The messages follow the real ones closely enough that code which shows them to a user (or
looks for the quota numbers in them) is exercised as it will be against Azure.
"""

from __future__ import annotations


class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "details": []}}


def quota_exceeded(
    cluster: str,
    node_resource_group: str,
    location: str,
    vm_family: str,
    limit: int,
    usage: int,
    required: int,
) -> ArmError:
    # AKS runs a preflight check of the compute quota and answers 400 with the CRP message.
    message = (
        f"Preflight validation check for resource(s) for container service {cluster} in "
        f"resource group {node_resource_group} failed. Message: Operation could not be "
        f"completed as it results in exceeding approved {vm_family} Cores quota. Additional "
        f"details - Deployment Model: Resource Manager, Location: {location}, Current Limit: "
        f"{limit}, Current Usage: {usage}, Additional Required: {required}, (Minimum) New "
        f"Limit Required: {usage + required}. Submit a request for Quota increase by "
        "specifying parameters listed in the 'Details' section for deployment to succeed."
    )
    return ArmError(400, "QuotaExceeded", message)


def invalid_vm_size(pool: str, location: str) -> ArmError:
    return ArmError(
        400,
        "BadRequest",
        f"The VM size of AgentPoolProfile:{pool} is not allowed in your subscription in "
        f"location '{location}'. For more details, please visit "
        "https://aka.ms/aks/quotas-skus-regions",
    )


def throttled(retry_after: float) -> ArmError:
    return ArmError(
        429,
        "TooManyRequests",
        "The request is being throttled as the limit has been reached for operation type - "
        "Write_ObservationWindow_00:01:00. Retry after the time in the Retry-After header.",
        headers={"Retry-After": str(_whole_seconds(retry_after))},
    )


def internal_error() -> ArmError:
    return ArmError(
        500,
        "InternalServerError",
        "An internal server error occurred while processing the request. Please retry.",
    )


def not_found(kind: str, name: str, parent: str = "") -> ArmError:
    where = f" under {parent}" if parent else ""
    code = "ResourceGroupNotFound" if kind == "resource group" else "NotFound"
    return ArmError(404, code, f"The {kind} '{name}'{where} was not found.")


def bad_request(code: str, message: str) -> ArmError:
    return ArmError(400, code, message)


def unauthorized(reason: str) -> ArmError:
    return ArmError(
        401,
        "InvalidAuthenticationToken",
        f"The access token is invalid: {reason}",
        headers={
            "WWW-Authenticate": (
                f'Bearer authorization_uri="", error="invalid_token", error_description="{reason}"'
            )
        },
    )


def _whole_seconds(seconds: float) -> int:
    # Retry-After carries whole seconds; never 0, which clients read as "no hint".
    return max(1, round(seconds))
