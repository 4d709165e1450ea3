"""Request validation derived from the OpenAPI contract: the rules are written once.

``openapi.yaml``'s request schemas are JSON Schema (OpenAPI 3.1), compiled to Python by
``fastjsonschema``: ~15x faster than ``jsonschema``'s interpreter, which the tests use as
the independent reference that the contract and the sidecar agree (``make
bench-validation``: a 20-event session is checked and converted in well under 0.1 ms).
The limits an operator can change (``k``, events, user features, the context signal
names) are set on a copy of the schema from the sidecar's configuration, so
``/openapi.yaml`` documents the defaults and the validator enforces what was configured.
A violation becomes a :class:`RequestError` naming the field (``events[0].item_id``,
``filters.price.min``) with a message written for a person; the API answers it as a 4xx.
What a schema cannot say (event-type aliases, ISO-8601 times, ``price.min <= price.max``, a
category path without a level) is checked where the request is converted (``api.py``,
``filters.py``), with the same error type.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
from typing import Any, Optional, Tuple

import fastjsonschema
import yaml

OPENAPI_PATH = os.path.join(os.path.dirname(__file__), "openapi.yaml")


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
    """A JSON value's type as the messages name it."""
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


@dataclasses.dataclass(frozen=True)
class Limits:
    """The configurable bounds the contract's schemas are specialised with."""
    max_k: int = 200
    default_k: int = 10
    max_events: int = 200
    max_user_features: int = 64
    signal_names: Tuple[str, ...] = ("event", "weather", "promotion", "extra")


@functools.lru_cache(maxsize=1)
def openapi_document() -> dict:
    with open(OPENAPI_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _specialised_schemas(limits: Limits) -> dict:
    schemas = copy.deepcopy(openapi_document()["components"]["schemas"])
    request = schemas["RecommendationRequest"]["properties"]
    request["k"].update(maximum=limits.max_k, default=limits.default_k)
    request["events"]["maxItems"] = limits.max_events
    request["user_features"]["maxProperties"] = limits.max_user_features
    signals = schemas["Context"]["properties"]["signals"]["properties"]
    template = next(iter(signals.values()))
    schemas["Context"]["properties"]["signals"]["properties"] = {
        name: dict(template) for name in limits.signal_names}
    return schemas


@functools.lru_cache(maxsize=16)
def validator(schema_name: str, limits: Limits = Limits()):
    """A compiled check of one of the contract's schemas (cached per limits); it raises
    ``fastjsonschema.JsonSchemaValueException`` and never fills in defaults."""
    root = {"$ref": f"#/components/schemas/{schema_name}",
            "components": {"schemas": _specialised_schemas(limits)}}
    return fastjsonschema.compile(root, use_default=False, use_formats=False)


def check(schema_name: str, value: Any, limits: Limits = Limits(), field: str = "") -> None:
    """Raises a :class:`RequestError` for the first way ``value`` breaks the schema."""
    try:
        validator(schema_name, limits)(value)
    except fastjsonschema.JsonSchemaValueException as e:
        raise _request_error(e, value, field) from None


# ------------------------------------------------------------------ messages for people

def field_path(parts, prefix: str = "") -> str:
    """``["events", 0, "item_id"]`` -> ``events[0].item_id``."""
    out = prefix
    for part in parts:
        out = f"{out}[{part}]" if isinstance(part, int) else (f"{out}.{part}" if out else part)
    return out


_KINDS = {"integer": "an integer", "number": "a number", "string": "a string",
          "boolean": "true or false", "array": "an array", "object": "an object"}


def _expected(schema: dict) -> str:
    declared = schema["type"]  # a "type" error: the failing schema has one
    types = [declared] if isinstance(declared, str) else [t for t in declared if t != "null"]
    if sorted(types) == ["integer", "string"]:
        return "unix seconds or an ISO-8601 time"
    if types == ["array"] and schema.get("items", {}).get("type") == "string":
        return "an array of strings"
    words = [_KINDS.get(t, t) for t in types]
    if "true or false" in words and len(words) > 1:
        words[words.index("true or false")] = "a boolean"
    return " or ".join(words)


def _number(value) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) > 20:
        return f"an integer of {len(str(abs(value)))} digits"
    return repr(value)


def _range(schema: dict, value) -> str:
    low, high = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)
    kind = "" if "integer" in str(schema.get("type")) else "a finite number "
    bounds = (f"between {low:g} and {high:g}" if math.isfinite(low) and math.isfinite(high)
              else f">= {low:g}" if math.isfinite(low) else f"<= {high:g}")
    return f"must be {kind}{bounds}, got {_number(value)}"


def _located(path, document):
    """fastjsonschema's path (``['data', 'events', '0']``, indices as strings) -> the value
    there and the path with list indices as integers."""
    parts, value = [], document
    for part in list(path)[1:]:
        if isinstance(value, list):
            part = int(part)
        parts.append(part)
        value = value[part]
    return value, parts


def _unknown(value, schema: dict) -> list:
    if schema.get("additionalProperties") is not False or not isinstance(value, dict):
        return []
    return [k for k in value if k not in schema.get("properties", {})]


def _request_error(error, document, prefix: str) -> RequestError:
    value, parts = _located(error.path, document)
    field = field_path(parts, prefix)
    kind, rule, schema = error.rule, error.rule_definition, error.definition
    if kind == "type" and not field:
        return RequestError(f"the request body must be a JSON object, got {type_name(value)}")
    if kind == "type":
        message = f"'{field}' must be {_expected(schema)}, got {type_name(value)}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            message += f" {_number(value)}"
    elif kind == "additionalProperties" or (kind == "required" and _unknown(value, schema)):
        # an unknown name explains a missing required one best: {"item": ..} for "item_id"
        where = field_path([_unknown(value, schema)[0]], field)
        allowed = ", ".join(schema.get("properties", {}))
        return RequestError(f"unknown field '{where}' (allowed: {allowed})", where)
    elif kind == "required":
        missing = next(k for k in rule if k not in value)
        where = field_path([missing], field)
        return RequestError(f"'{where}' is required", where)
    elif kind == "anyOf" and all(set(s) == {"required"} for s in rule):
        names = [s["required"][0] for s in rule]
        hint = " (an empty array asks for popular items)" if "events" in names else ""
        return RequestError(f"give {' and/or '.join(repr(n) for n in names)}{hint}",
                            field_path([names[0]], field))
    elif kind == "propertyNames":
        name = next(k for k in value if len(k) > rule.get("maxLength", len(k)))
        where = field_path([name], field)
        return RequestError(f"'{where}': names are at most {rule.get('maxLength')} "
                            "characters", where)
    elif kind in ("minimum", "maximum"):
        message = f"'{field}' {_range(schema, value)}"
    elif kind == "enum":
        message = f"'{field}' must be one of {', '.join(map(str, rule))}, got {value!r}"
    elif kind in ("maxItems", "maxProperties"):
        message = f"'{field}' has {len(value)} entries; at most {rule} are allowed"
    elif kind in ("minLength", "pattern"):
        message = f"'{field}' must not be empty"
    elif kind == "maxLength":
        message = f"'{field}' is longer than {rule} characters"
    else:  # a keyword the contract may use later: the library's own wording
        message = f"'{field}': {error.message}"
    return RequestError(message, field or None)


__all__ = ["RequestError", "Limits", "check", "validator", "openapi_document", "field_path",
           "type_name", "OPENAPI_PATH"]
