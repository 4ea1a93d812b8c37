"""ARM's errors, turned into what a user can act on.

`classify` is pure: an HTTP status, ARM's error code and message (and Retry-After) in, an
`ArmFailure` out: the condition reason, a message that says what to do, whether waiting will
help, and how long to wait. `from_exception` reads those out of azure-core's exceptions.

Beyond Azure/gpu-provisioner, which shows a quota error as "NodeClaims not enough": the quota
family, region, usage, limit and the new limit to ask for are read out of the compute
resource provider's message, and the message says where to ask for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

QUOTA_EXCEEDED = "QuotaExceeded"
INSTANCE_TYPE_UNAVAILABLE = "InstanceTypeUnavailable"
ARM_THROTTLED = "ArmThrottled"
ARM_UNAVAILABLE = "ArmUnavailable"
ARM_UNREACHABLE = "ArmUnreachable"
AZURE_AUTH_FAILED = "AzureAuthorizationFailed"
AKS_CLUSTER_NOT_FOUND = "AksClusterNotFound"
AGENT_POOL_REJECTED = "AgentPoolRejected"
OPERATION_IN_PROGRESS = "Provisioning"

QUOTA_HELP = "https://learn.microsoft.com/azure/quotas/per-vm-quota-requests"
SKU_HELP = "https://aka.ms/aks/quotas-skus-regions"
# How long a failure that waiting will not fix is left before trying again (a user who fixed
# the quota sees the workspace proceed without touching it).
PERMANENT_RETRY_SECONDS = 300.0


@dataclass(frozen=True)
class ArmFailure:
    reason: str  # the ResourceReady reason
    message: str  # what happened and what to do
    permanent: bool  # waiting alone will not fix it (NodeReport.failed)
    retry_after: float | None = None  # the server's Retry-After, when it sent one
    status: int | None = None
    code: str | None = None


@dataclass(frozen=True)
class Quota:
    family: str
    location: str | None = None
    limit: int | None = None
    usage: int | None = None
    required: int | None = None
    new_limit: int | None = None


_QUOTA_FAMILY = re.compile(r"exceeding approved (?P<family>\S+?) Cores quota", re.IGNORECASE)
_QUOTA_FIELDS = {
    "location": re.compile(r"Location:\s*(?P<v>[A-Za-z0-9]+)"),
    "limit": re.compile(r"Current Limit:\s*(?P<v>\d+)"),
    "usage": re.compile(r"Current Usage:\s*(?P<v>\d+)"),
    "required": re.compile(r"Additional Required:\s*(?P<v>\d+)"),
    "new_limit": re.compile(r"New Limit Required:\s*(?P<v>\d+)"),
}
_LOCATION = re.compile(r"location '(?P<v>[A-Za-z0-9]+)'", re.IGNORECASE)
_QUOTA_CODES = {"quotaexceeded", "operationnotallowed", "subscriptionquotaexceeded"}
_SKU_CODES = {"skunotavailable", "invalidvmsize", "vmsizenotsupported"}


def parse_quota(message: str) -> Quota | None:
    """The numbers of a compute quota error, as the compute resource provider words it."""
    found = _QUOTA_FAMILY.search(message or "")
    if found is None:
        return None
    values: dict = {}
    for key, pattern in _QUOTA_FIELDS.items():
        match = pattern.search(message)
        if match:
            values[key] = match["v"] if key == "location" else int(match["v"])
    return Quota(family=found["family"], **values)


def classify(
    status: int | None,
    code: str | None,
    message: str | None,
    *,
    retry_after: float | None = None,
    pool: str = "",
    vm_size: str | None = None,
    count: int | None = None,
    location: str | None = None,
) -> ArmFailure:
    message = (message or "").strip()
    lowered = (code or "").lower()
    what = f"agent pool {pool}" if pool else "the agent pool"
    size = vm_size or "the instance type"

    quota = parse_quota(message) if lowered in _QUOTA_CODES or "quota" in message.lower() else None
    if quota is not None or lowered == "quotaexceeded":
        return ArmFailure(
            QUOTA_EXCEEDED,
            _quota_message(quota, what, size, count, location),
            permanent=True,
            status=status,
            code=code,
        )
    if lowered in _SKU_CODES or "vm size of agentpoolprofile" in message.lower():
        where = _first(_LOCATION.search(message), location)
        region = f" in {where}" if where else ""
        listing = f"az vm list-skus --size {size} --all -o table" + (
            f" --location {where}" if where else ""
        )
        return ArmFailure(
            INSTANCE_TYPE_UNAVAILABLE,
            f"{size} is not available to this subscription{region}, so {what} cannot be "
            f"created. Choose another resource.instanceType, or ask Azure support to enable "
            f"{size}{region} (see which sizes you may use: `{listing}`; {SKU_HELP}). "
            f"ARM said: {code}: {message}",
            permanent=True,
            status=status,
            code=code,
        )
    if status == 429 or lowered == "toomanyrequests":
        wait = f"retrying after {retry_after:g}s" if retry_after else "retrying with backoff"
        return ArmFailure(
            ARM_THROTTLED,
            f"ARM is throttling this subscription's requests (429 {code or 'TooManyRequests'}); "
            f"{wait}. Nothing to do unless it persists: then fewer controllers or workspaces "
            "should share the subscription.",
            permanent=False,
            retry_after=retry_after,
            status=status,
            code=code,
        )
    if status is not None and status >= 500:
        return ArmFailure(
            ARM_UNAVAILABLE,
            f"ARM answered {status} {code or ''} for {what}; retrying with backoff. "
            f"ARM said: {message or 'no message'}",
            permanent=False,
            retry_after=retry_after,
            status=status,
            code=code,
        )
    if status == 409 and "in progress" in message.lower():
        return ArmFailure(
            OPERATION_IN_PROGRESS,
            f"{what} has an operation in progress; waiting for it to finish",
            permanent=False,
            retry_after=retry_after,
            status=status,
            code=code,
        )
    if status in (401, 403) or lowered in ("authorizationfailed", "invalidauthenticationtoken"):
        return ArmFailure(
            AZURE_AUTH_FAILED,
            f"ARM refused the controller's identity ({status} {code}): {message}. Grant it a "
            "role that may write agent pools on the AKS cluster (for example 'Azure Kubernetes "
            "Service Contributor Role'), or fix the AZURE_* credentials it runs with.",
            permanent=True,
            status=status,
            code=code,
        )
    if status == 404 and "agent pool" not in message.lower():
        return ArmFailure(
            AKS_CLUSTER_NOT_FOUND,
            f"ARM does not know the AKS cluster ({code}: {message}). Check azure.subscription_id, "
            "azure.resource_group and azure.cluster_name (AZURE_SUBSCRIPTION_ID, "
            "KAITO_AKS_RESOURCE_GROUP, KAITO_AKS_CLUSTER).",
            permanent=True,
            status=status,
            code=code,
        )
    return ArmFailure(
        AGENT_POOL_REJECTED,
        f"ARM refused {what} ({status} {code}): {message}",
        permanent=status is not None and 400 <= status < 500,
        retry_after=retry_after,
        status=status,
        code=code,
    )


def _quota_message(
    quota: Quota | None, what: str, size: str, count: int | None, location: str | None
) -> str:
    nodes = f"{count} x {size}" if count else size
    if quota is None:
        return (
            f"{what} ({nodes}) exceeds the subscription's compute quota. Request more vCPU "
            f"quota for the {size} family ({QUOTA_HELP}), or choose another "
            "resource.instanceType."
        )
    where = quota.location or location
    region = f" in {where}" if where else ""
    numbers = []
    if quota.required is not None:
        numbers.append(f"needs {quota.required} more vCPUs")
    if quota.limit is not None:
        numbers.append(f"the limit is {quota.limit}")
    if quota.usage is not None:
        numbers.append(f"{quota.usage} are in use")
    detail = f" ({', '.join(numbers)})" if numbers else ""
    target = quota.new_limit
    if target is None and quota.usage is not None and quota.required is not None:
        target = quota.usage + quota.required
    ask = f"at least {target} vCPUs of" if target is not None else "more vCPUs of"
    usage_cmd = "az vm list-usage -o table" + (f" --location {where}" if where else "")
    return (
        f"{what} ({nodes}) exceeds the {quota.family} vCPU quota{region}{detail}. "
        f"Request {ask} {quota.family}{region} (Azure portal > Quotas > Compute, "
        f"{QUOTA_HELP}; current usage: `{usage_cmd}`), or choose a resource.instanceType of "
        "another family or a smaller resource.count."
    )


def _first(match: re.Match | None, default: str | None) -> str | None:
    return match["v"] if match else default


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds (ARM sends whole seconds; HTTP dates are not used by ARM)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def from_exception(exc: BaseException, **context) -> ArmFailure:
    """An ArmFailure for an azure-core exception (HTTP, network or credential)."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, ClientAuthenticationError) and getattr(exc, "status_code", None) is None:
        return ArmFailure(
            AZURE_AUTH_FAILED,
            f"no Azure token for ARM: {_one_line(exc)}. Set the AZURE_* variables, workload "
            "identity or a managed identity for DefaultAzureCredential.",
            permanent=True,
        )
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        error = getattr(exc, "error", None)
        code = getattr(error, "code", None)
        message = getattr(error, "message", None) or exc.reason or _one_line(exc)
        headers = getattr(exc.response, "headers", None) or {}
        return classify(
            exc.status_code,
            code,
            message,
            retry_after=retry_after_seconds(headers.get("Retry-After")),
            **context,
        )
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, OSError)):
        return ArmFailure(
            ARM_UNREACHABLE,
            f"cannot reach ARM ({_one_line(exc)}); retrying with backoff. If it persists, "
            "check azure.arm_endpoint (KAITO_ARM_ENDPOINT), the network and azure.ca_bundle.",
            permanent=False,
        )
    if isinstance(exc, HttpResponseError):  # an LRO that failed, with ARM's error in its body
        error = getattr(exc, "error", None)
        return classify(
            None,
            getattr(error, "code", None),
            getattr(error, "message", None) or _one_line(exc),
            **context,
        )
    raise exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
