"""Request validation primitives: one error type and strict field readers.

Every problem with a request becomes a :class:`RequestError` naming the field
(dotted path, e.g. ``filters.price.min``) and saying what was expected; the API
turns it into a 4xx JSON answer.  Nothing here raises anything else on bad
input, so bad input can never become a 500.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Optional


class RequestError(ValueError):
    """A client error: ``status`` (4xx), a human message, and the offending field."""

    def __init__(self, message: str, field: Optional[str] = None, status: int = 400,
                 code: str = "invalid_request"):
        super().__init__(message)
        self.message, self.field, self.status, self.code = message, field, status, code
        self.close = False  # the connection must be closed after the answer

    def to_json(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return {"error": body}


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check_object(value: Any, field: str, allowed: Iterable[str]) -> Mapping:
    """``value`` must be a JSON object whose keys are all in ``allowed``."""
    if not isinstance(value, dict):
        raise RequestError(f"'{field}' must be an object, got {type_name(value)}", field)
    allowed = tuple(allowed)
    for key in value:
        if key not in allowed:
            where = f"{field}.{key}" if field else key
            raise RequestError(f"unknown field '{where}' (allowed: {', '.join(allowed)})", where)
    return value


def get_string(obj: Mapping, key: str, field: str, max_len: int = 256,
               required: bool = False, allow_empty: bool = False) -> Optional[str]:
    value = obj.get(key)
    if value is None:
        if required:
            raise RequestError(f"'{field}' is required", field)
        return None
    if not isinstance(value, str):
        raise RequestError(f"'{field}' must be a string, got {type_name(value)}", field)
    if not value.strip() and not allow_empty:
        raise RequestError(f"'{field}' must not be empty", field)
    if len(value) > max_len:
        raise RequestError(f"'{field}' is longer than {max_len} characters", field)
    return value


def get_int(obj: Mapping, key: str, field: str, minimum: int, maximum: int,
            default: Optional[int] = None) -> Optional[int]:
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise RequestError(f"'{field}' must be an integer, got {type_name(value)} "
                           f"{value!r}", field)
    value = int(value)
    if not minimum <= value <= maximum:
        raise RequestError(f"'{field}' must be between {minimum} and {maximum}, got {value}",
                           field)
    return value


def get_number(obj: Mapping, key: str, field: str, minimum: float = -math.inf,
               maximum: float = math.inf) -> Optional[float]:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"'{field}' must be a number, got {type_name(value)}", field)
    try:
        value = float(value)
    except OverflowError:  # an integer literal with hundreds of digits
        raise RequestError(f"'{field}' must be a finite number between {minimum:g} and "
                           f"{maximum:g}, got an integer of {len(str(value))} digits",
                           field) from None
    if not math.isfinite(value) or not minimum <= value <= maximum:
        raise RequestError(f"'{field}' must be a finite number between {minimum:g} and "
                           f"{maximum:g}, got {value!r}", field)
    return value


def get_bool(obj: Mapping, key: str, field: str, default: bool = False) -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"'{field}' must be true or false, got {type_name(value)}", field)
    return value


def get_string_list(obj: Mapping, key: str, field: str, max_items: int,
                    max_len: int = 256) -> tuple:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RequestError(f"'{field}' must be an array of strings, got {type_name(value)}",
                           field)
    if len(value) > max_items:
        raise RequestError(f"'{field}' has {len(value)} entries; at most {max_items} are "
                           "allowed", field)
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise RequestError(f"'{field}[{i}]' must be a non-empty string", f"{field}[{i}]")
        if len(item) > max_len:
            raise RequestError(f"'{field}[{i}]' is longer than {max_len} characters",
                               f"{field}[{i}]")
        out.append(item)
    return tuple(out)


__all__ = ["RequestError", "type_name", "check_object", "get_string", "get_int", "get_number", "get_bool",
           "get_string_list"]
