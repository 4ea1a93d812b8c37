"""Idle timeout: scale an inference workspace's nodes to zero after a while with no request.

Annotations on the workspace carry everything the controller needs, so a restarted controller
picks up where the last one left off:

- `kaito.sh/idle-timeout: 30m` (the user's; a Go-style duration) turns it on;
- `kaito.sh/scaled-to-zero: <RFC 3339 time>` (the controller's) says its nodes are gone;
- `kaito.sh/wake-requested: <RFC 3339 time>` (`kaito wake`, a chat) asks for them back; a
  request newer than the scale-down wakes it.

Activity is the runtime's request counter (Prometheus `/metrics`): the workspace is idle when
the counter has not moved for the timeout. `IdleTracker` is pure over (counter, clock).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

IDLE_TIMEOUT = "kaito.sh/idle-timeout"
SCALED_TO_ZERO = "kaito.sh/scaled-to-zero"
WAKE_REQUESTED = "kaito.sh/wake-requested"
SCALED_TO_ZERO_IDLE = "ScaledToZeroIdle"  # ResourceReady=False reason

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration ("30m", "1h30m", "90s", "1.5h"); ValueError otherwise."""
    value = text.strip() if isinstance(text, str) else ""
    if not value:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    while pos < len(value):
        m = _PART.match(value, pos)
        if m is None:
            raise ValueError(f"{text!r} is not a duration")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total


def check_timeout(annotations: dict | None) -> str | None:
    """The admission error for a bad `kaito.sh/idle-timeout`, or None when it is absent or good."""
    raw = (annotations or {}).get(IDLE_TIMEOUT)
    if raw is None:
        return None
    try:
        seconds = parse_duration(str(raw))
    except ValueError:
        return f'{raw!r} is not a duration; write it as Go does, e.g. "30m", "1h30m" or "90s"'
    if seconds < 1:
        return (
            f"{raw!r} is under a second; "
            'give a timeout of at least "1s" (e.g. "30m"), or remove the annotation'
        )
    return None


def timeout_of(annotations: dict | None) -> float | None:
    """The idle timeout in seconds, or None (absent, or invalid: admission refuses those)."""
    if check_timeout(annotations) is not None:
        return None
    raw = (annotations or {}).get(IDLE_TIMEOUT)
    return None if raw is None else parse_duration(str(raw))


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def stamp(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def wake_pending(annotations: dict | None) -> bool:
    """A wake request newer than the scale-down (or one with no readable scale-down time)."""
    ann = annotations or {}
    if SCALED_TO_ZERO not in ann:
        return False
    woke = parse_time(ann.get(WAKE_REQUESTED))
    scaled = parse_time(ann.get(SCALED_TO_ZERO))
    return woke is not None and (scaled is None or woke > scaled)


@dataclass
class _Seen:
    count: float | None
    since: float  # clock reading when the counter last moved (or was first seen)


class IdleTracker:
    """Per workspace: when its request counter last moved. Pure over the readings given."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], _Seen] = {}

    def observe(self, key: tuple[str, str], count: float | None, now: float) -> float:
        """Record a reading; return seconds since the last request (or first sight)."""
        seen = self._seen.get(key)
        if seen is None or (count is not None and count != seen.count):
            # An unreadable counter never makes a workspace idle: only a quiet one does.
            self._seen[key] = seen = _Seen(count, now)
        elif count is None:
            seen.since = now
        return now - seen.since

    def reset(self, key: tuple[str, str], now: float) -> None:
        """Start the clock afresh (woken up: give it a whole timeout again)."""
        self._seen[key] = _Seen(None, now)

    def forget(self, key: tuple[str, str]) -> None:
        self._seen.pop(key, None)
