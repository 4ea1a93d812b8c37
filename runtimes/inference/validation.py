"""Client errors and the field checks behind them: every bad request becomes a 4xx with an
OpenAI-style body ({"error": {"message", "type", "param", "code"}}), never a 500."""

from __future__ import annotations

import json
import math
from typing import Any

MAX_STOPS = 16  # stop strings per request
MAX_STOP_CHARS = 1024  # characters per stop string


class ClientError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def parse_json(raw: bytes) -> dict:
    """The request body as a JSON object."""
    if not raw:
        raise ClientError("the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ClientError(
            f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise ClientError(
            f"the request body must be a JSON object, not {_kind(body)}", code="invalid_json"
        )
    return body


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _type_error(param: str, expected: str, value: Any) -> ClientError:
    return ClientError(
        f"{param} must be {expected}, not {_kind(value)}", param=param, code="invalid_type"
    )


def _range_error(param: str, message: str) -> ClientError:
    return ClientError(f"{param} {message}", param=param, code="invalid_value")


class Fields:
    """Typed access to a JSON object's fields, raising ClientError naming the field."""

    def __init__(self, body: dict, prefix: str = ""):
        self.body = body
        self.prefix = prefix

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def has(self, key: str) -> bool:
        return self.body.get(key) is not None

    def integer(self, key: str, default=None, *, minimum=None, maximum=None):
        value = self.body.get(key)
        if value is None:
            return default
        # JSON has one number type; accept 5.0 for 5 but not 5.5 or true.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(self.name(key), "an integer", value)
        if minimum is not None and value < minimum:
            raise _range_error(self.name(key), f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise _range_error(self.name(key), f"must be at most {maximum}, got {value}")
        return value

    def number(self, key: str, default=None, *, minimum=None, maximum=None, above=None):
        value = self.body.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(self.name(key), "a number", value)
        value = float(value)
        if not math.isfinite(value):
            raise _range_error(self.name(key), "must be finite")
        if minimum is not None and value < minimum:
            raise _range_error(self.name(key), f"must be at least {minimum:g}, got {value:g}")
        if above is not None and value <= above:
            raise _range_error(self.name(key), f"must be greater than {above:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise _range_error(self.name(key), f"must be at most {maximum:g}, got {value:g}")
        return value

    def boolean(self, key: str, default=None):
        value = self.body.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise _type_error(self.name(key), "a boolean", value)
        return value

    def string(self, key: str, default=None, *, required: bool = False):
        value = self.body.get(key)
        if value is None:
            if required:
                raise ClientError(
                    f"{self.name(key)} is required", param=self.name(key), code="missing_field"
                )
            return default
        if not isinstance(value, str):
            raise _type_error(self.name(key), "a string", value)
        return value

    def object(self, key: str) -> Fields:
        value = self.body.get(key)
        if value is None:
            return Fields({}, prefix=f"{self.name(key)}.")
        if not isinstance(value, dict):
            raise _type_error(self.name(key), "an object", value)
        return Fields(value, prefix=f"{self.name(key)}.")

    def stop(self, key: str = "stop") -> list[str]:
        """Stop strings: at most MAX_STOPS, each at most MAX_STOP_CHARS characters."""
        value = self.body.get(key)
        if value is None:
            return []
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(s, str) for s in values):
            raise _type_error(self.name(key), "a string or an array of strings", value)
        if len(values) > MAX_STOPS:
            raise _range_error(
                self.name(key), f"may hold at most {MAX_STOPS} strings, got {len(values)}"
            )
        for i, stop in enumerate(values):
            if len(stop) > MAX_STOP_CHARS:
                raise ClientError(
                    f"{self.name(key)}[{i}] is {len(stop)} characters long; a stop string may "
                    f"be at most {MAX_STOP_CHARS}",
                    param=self.name(key),
                    code="invalid_value",
                )
        return list(values)
