"""How long to wait before trying a request again: the server's Retry-After when it gives one
(seconds or an HTTP date), else exponential backoff with jitter, so that many clients failing
together do not come back together. Used by the OCI client and the tuning job's downloads."""

from __future__ import annotations

import email.utils
import random
import time

BASE = 0.5  # seconds before the first retry, doubled each attempt
CAP = 8.0  # the longest backoff between two attempts
MAX_RETRY_AFTER = 60.0  # the longest wait a server's Retry-After may impose


def retry_after(header: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP date (RFC 9110);
    None when there is none or it cannot be read. A date in the past means now (0)."""
    if header is None or not header.strip():
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; parsedate gives naive for "-0000"
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff(attempt: int, *, base: float = BASE, cap: float = CAP) -> float:
    """The wait before retry number `attempt` (1, 2, ...): half of the exponential step, plus a
    random part of the other half."""
    step = min(cap, base * 2 ** (attempt - 1))
    return step / 2 + random.uniform(0, step / 2)


def delay(attempt: int, retry_after_header: str | None = None) -> float:
    """What to wait before retry `attempt`: the server's Retry-After (bounded), else backoff."""
    asked = retry_after(retry_after_header)
    return backoff(attempt) if asked is None else min(asked, MAX_RETRY_AFTER)
