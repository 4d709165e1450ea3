"""JSON text as TF Serving's REST API reads and writes it (rapidjson 1.1.0, json_tensor.cc).

Clients see three rapidjson behaviours, so they are reproduced here:

* ``parse_object``: a body is read as rapidjson's iterative parser reads it (flags
  ``kParseIterativeFlag | kParseNanAndInfFlag | kParseStopWhenDoneFlag``): any nesting depth,
  ``NaN``/``Inf``/``Infinity`` accepted, anything after the document ignored, a leading UTF-8
  BOM skipped, and a refusal worded ``JSON Parse error: <rapidjson message> at offset: <byte>``.
  ``json.loads`` reads every ordinary body; only a body it refuses (or nests deeper than
  Python's recursion limit) is re-read by the small iterative reader below, which accepts
  what rapidjson accepts and otherwise fails where and as rapidjson fails.
* ``debug_string``: request values quoted in error messages, as ``JsonValueToDebugString``
  writes them (pretty writer, single-line arrays, cut once 256 bytes are written).
* ``RawJson``/``json_bytes``: response documents that carry number text written by
  ``tensors`` (TF Serving's own float formatting, which ``json.dumps`` cannot produce).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from serving.model_server import errors

_INT_MIN, _UINT_MAX = -(1 << 63), (1 << 64) - 1
_BIG_INTEGER_PART = 1.7976931348623157e307  # rapidjson: DBL_MAX / 10 while reading digits
_DEBUG_LIMIT = 256  # kMaxJsonDebugStringBytes

EMPTY = "The document is empty."
VALUE_INVALID = "Invalid value."
MISS_NAME = "Missing a name for object member."
MISS_COLON = "Missing a colon after a name of object member."
MISS_COMMA_CURLY = "Missing a comma or '}' after an object member."
MISS_COMMA_BRACKET = "Missing a comma or ']' after an array element."
BAD_HEX = "Incorrect hex digit after \\u escape in string."
BAD_SURROGATE = "The surrogate pair in string is invalid."
BAD_ESCAPE = "Invalid escape character in string."
MISS_QUOTE = "Missing a closing quotation mark in string."
BAD_ENCODING = "Invalid encoding in string."
TOO_BIG = "Number too big to be stored in double."
MISS_FRACTION = "Miss fraction part in number."
MISS_EXPONENT = "Miss exponent in number."


class _Refused(ValueError):
    """A number ``json.loads`` reads but rapidjson refuses (re-read for the offset)."""


def parse_error(message: str, offset: int) -> errors.ServingError:
    return errors.invalid_argument(f"JSON Parse error: {message} at offset: {offset}")


# ------------------------------------------------------------------------------ reading
def _integer_part_too_big(text: str) -> bool:
    digits = re.match(r"-?([0-9]*)", text).group(1)  # type: ignore[union-attr]
    return len(digits) > 300 and float(digits) >= _BIG_INTEGER_PART


def _number(text: str, is_integer: bool) -> Any:
    """rapidjson's number value: an integer while it fits int64/uint64, else a double."""
    if is_integer and len(text) <= 21:
        value = int(text)
        if _INT_MIN <= value <= _UINT_MAX:
            return value
    if _integer_part_too_big(text):
        raise _Refused(text)
    number = float(text)
    if math.isinf(number):
        raise _Refused(text)
    return number


def _parse_int(text: str) -> Any:
    return int(text) if len(text) < 19 else _number(text, True)  # < 10**18: an int64


def _parse_float(text: str) -> Any:
    value = float(text)  # the integer part can only be too big in a text this long:
    if len(text) > 300 or math.isinf(value):
        return _number(text, False)
    return value


def loads(body: bytes) -> Any:
    """A request body -> Python value, or INVALID_ARGUMENT with rapidjson's error."""
    try:
        return json.loads(body.decode("utf-8"), parse_int=_parse_int, parse_float=_parse_float)
    except (ValueError, RecursionError):
        return _Reader(body).read()


def parse_object(body: bytes) -> dict:
    """``ParseJson``: an empty body, a parse error or a non-object document is refused."""
    if not body:
        raise errors.invalid_argument("JSON Parse error: The document is empty")
    document = loads(body)
    if not isinstance(document, dict):
        raise errors.invalid_argument(f"JSON Value: {debug_string(document)} Is not object")
    return document


_WHITESPACE = re.compile(rb"[ \t\n\r]*")
_DIGITS = re.compile(rb"[0-9]+")
_INTEGER = re.compile(rb"0|[1-9][0-9]*")
_PLAIN = re.compile(rb'[^"\\\x00-\x1f]+')
_ESCAPES = {ord('"'): '"', ord("\\"): "\\", ord("/"): "/", ord("b"): "\b", ord("f"): "\f",
            ord("n"): "\n", ord("r"): "\r", ord("t"): "\t"}
_HEX = re.compile(rb"[0-9a-fA-F]{4}")

# States of rapidjson's iterative parser (what the next token may be).
_START, _FINISH = "start", "finish"
_OBJECT_INITIAL, _MEMBER_KEY, _KEY_VALUE_DELIMITER = "object", "key", "colon"
_MEMBER_VALUE, _MEMBER_DELIMITER = "member", "member-comma"
_ARRAY_INITIAL, _ELEMENT, _ELEMENT_DELIMITER = "array", "element", "element-comma"
_END_OF_INPUT = {  # HandleError: the message for the state the input ended (or failed) in
    _START: EMPTY, _OBJECT_INITIAL: MISS_NAME, _MEMBER_DELIMITER: MISS_NAME,
    _MEMBER_KEY: MISS_COLON, _MEMBER_VALUE: MISS_COMMA_CURLY, _KEY_VALUE_DELIMITER: VALUE_INVALID,
    _ARRAY_INITIAL: VALUE_INVALID, _ELEMENT_DELIMITER: VALUE_INVALID,
    _ELEMENT: MISS_COMMA_BRACKET}


class _Reader:
    """rapidjson's iterative parser over the body's bytes (offsets are byte offsets)."""

    def __init__(self, body: bytes):
        self.data = body.split(b"\0", 1)[0]  # rapidjson stops at the first NUL
        self.pos = 0
        for byte in (0xEF, 0xBB, 0xBF):  # EncodedInputStream<UTF8> skips a BOM, byte by byte
            if self.pos < len(self.data) and self.data[self.pos] == byte:
                self.pos += 1

    def _skip(self) -> None:
        self.pos = _WHITESPACE.match(self.data, self.pos).end()  # type: ignore[union-attr]

    def read(self) -> Any:
        data = self.data
        stack: list = []  # open containers: a list, or an _Object
        root: Any = None
        state = _START
        self._skip()
        while self.pos < len(data):
            c = data[self.pos]
            if state in (_START, _KEY_VALUE_DELIMITER, _ARRAY_INITIAL, _ELEMENT_DELIMITER):
                if c == 0x5D and state in (_ARRAY_INITIAL, _ELEMENT_DELIMITER):  # ]
                    if state == _ELEMENT_DELIMITER:
                        raise parse_error(VALUE_INVALID, self.pos)
                    self.pos += 1
                    stack.pop()
                    state = self._after_value(stack)
                elif c in (0x7B, 0x5B):  # { [
                    container: Any = {} if c == 0x7B else []
                    if stack:
                        self._add(stack, container)
                    else:
                        root = container
                    stack.append(_Object(container) if c == 0x7B else container)
                    state = _OBJECT_INITIAL if c == 0x7B else _ARRAY_INITIAL
                    self.pos += 1
                elif c in (0x5D, 0x7D, 0x2C, 0x3A):  # ] } , : where a value must be
                    raise parse_error(EMPTY if state == _START else VALUE_INVALID, self.pos)
                else:
                    value = self._value(c)
                    if not stack:
                        return value
                    self._add(stack, value)
                    state = self._after_value(stack)
            elif state in (_OBJECT_INITIAL, _MEMBER_DELIMITER):
                if c == 0x22:
                    stack[-1].key = self._string()
                    state = _MEMBER_KEY
                elif c == 0x7D and state == _OBJECT_INITIAL:
                    self.pos += 1
                    stack.pop()
                    state = self._after_value(stack)
                else:
                    raise parse_error(MISS_NAME, self.pos)
            elif state == _MEMBER_KEY:
                if c != 0x3A:
                    raise parse_error(MISS_COLON, self.pos)
                self.pos += 1
                state = _KEY_VALUE_DELIMITER
            elif state in (_MEMBER_VALUE, _ELEMENT):
                close = 0x7D if state == _MEMBER_VALUE else 0x5D
                if c == 0x2C:
                    self.pos += 1
                    state = _MEMBER_DELIMITER if state == _MEMBER_VALUE else _ELEMENT_DELIMITER
                elif c == close:
                    self.pos += 1
                    stack.pop()
                    state = self._after_value(stack)
                else:
                    raise parse_error(MISS_COMMA_CURLY if state == _MEMBER_VALUE
                                      else MISS_COMMA_BRACKET, self.pos)
            if state == _FINISH:  # kParseStopWhenDoneFlag: what follows is not read
                return root
            self._skip()
        raise parse_error(_END_OF_INPUT[state], self.pos)

    @staticmethod
    def _add(stack: list, value: Any) -> None:
        top = stack[-1]
        if isinstance(top, _Object):
            top.value[top.key] = value
        else:
            top.append(value)

    @staticmethod
    def _after_value(stack: list) -> str:
        if not stack:
            return _FINISH
        return _MEMBER_VALUE if isinstance(stack[-1], _Object) else _ELEMENT

    def _value(self, c: int) -> Any:
        if c == 0x22:
            return self._string()
        for word, value in ((b"null", None), (b"true", True), (b"false", False)):
            if c == word[0]:
                self._literal(word)
                return value
        return self._number()

    def _literal(self, word: bytes) -> None:
        start, matched = self.pos, 1
        while matched < len(word) and self.data[start + matched:start + matched + 1] \
                == word[matched:matched + 1]:
            matched += 1
        if matched < len(word):
            raise parse_error(VALUE_INVALID, start + matched)
        self.pos = start + matched

    def _consume(self, word: bytes) -> bool:
        """Takes ``word``'s bytes while they match; True when all matched."""
        for byte in word:
            if self.pos < len(self.data) and self.data[self.pos] == byte:
                self.pos += 1
            else:
                return False
        return True

    def _number(self) -> Any:
        data, start = self.data, self.pos
        minus = self._consume(b"-")
        head = data[self.pos:self.pos + 1]
        if head in (b"N", b"I"):  # kParseNanAndInfFlag: NaN, Inf, Infinity (signed)
            if self._consume(b"NaN"):
                return math.nan
            if self._consume(b"Inf"):
                if data[self.pos:self.pos + 1] == b"i" and not self._consume(b"inity"):
                    raise parse_error(VALUE_INVALID, self.pos)
                return -math.inf if minus else math.inf
            raise parse_error(VALUE_INVALID, self.pos)
        match = _INTEGER.match(data, self.pos)
        if not match:
            raise parse_error(VALUE_INVALID, self.pos)
        self.pos = match.end()
        is_integer = True
        if self._consume(b"."):
            is_integer = False
            match = _DIGITS.match(data, self.pos)
            if not match:
                raise parse_error(MISS_FRACTION, self.pos)
            self.pos = match.end()
        if data[self.pos:self.pos + 1] in (b"e", b"E"):
            is_integer = False
            self.pos += 1
            if data[self.pos:self.pos + 1] in (b"+", b"-"):
                self.pos += 1
            match = _DIGITS.match(data, self.pos)
            if not match:
                raise parse_error(MISS_EXPONENT, self.pos)
            self.pos = match.end()
        try:
            return _number(data[start:self.pos].decode("ascii"), is_integer)
        except _Refused:
            raise parse_error(TOO_BIG, start) from None

    def _string(self) -> str:
        data = self.data
        self.pos += 1  # the opening quote
        parts: list[str] = []
        while True:
            match = _PLAIN.match(data, self.pos)
            if match:
                try:
                    parts.append(match.group().decode("utf-8"))
                except UnicodeDecodeError as e:  # rapidjson copies such bytes; ours refuses
                    raise parse_error(BAD_ENCODING, self.pos + e.start) from None
                self.pos = match.end()
            if self.pos >= len(data):
                raise parse_error(MISS_QUOTE, self.pos)
            c = data[self.pos]
            if c == 0x22:
                self.pos += 1
                return "".join(parts)
            if c < 0x20:  # a control character (rapidjson 1.1.0 reports an escape error)
                raise parse_error(BAD_ESCAPE, self.pos)
            escape = self.pos  # a backslash
            self.pos += 1
            escaped = data[self.pos] if self.pos < len(data) else 0
            if escaped in _ESCAPES:
                parts.append(_ESCAPES[escaped])
                self.pos += 1
            elif escaped == 0x75:  # \uXXXX, a high surrogate followed by its low one
                self.pos += 1
                code = self._hex4(escape)
                if 0xD800 <= code <= 0xDBFF:
                    if not self._consume(b"\\u"):
                        raise parse_error(BAD_SURROGATE, escape)
                    low = self._hex4(escape)
                    if not 0xDC00 <= low <= 0xDFFF:
                        raise parse_error(BAD_SURROGATE, escape)
                    code = (((code - 0xD800) << 10) | (low - 0xDC00)) + 0x10000
                parts.append(chr(code))
            else:
                raise parse_error(BAD_ESCAPE, escape)

    def _hex4(self, escape: int) -> int:
        match = _HEX.match(self.data, self.pos)
        if not match:
            raise parse_error(BAD_HEX, escape)
        self.pos = match.end()
        return int(match.group(), 16)


class _Object:
    """An object being read and the key whose value comes next."""
    __slots__ = ("value", "key")

    def __init__(self, value: dict):
        self.value, self.key = value, ""


# ------------------------------------------------------------------------------ writing
def json_type(value: Any) -> str:
    """``JsonTypeString``: the JSON type of a parsed value, as TF Serving's messages name it."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    return "String" if isinstance(value, str) else "Number"


def double_text(value: float) -> str:
    """rapidjson's ``Writer::Double`` (Grisu shortest digits, ``Prettify``'s layout)."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    k = int(exponent or 0) - len(fraction)
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    digits, length = stripped, len(stripped)
    kk = length + k
    if 0 <= k and kk <= 21:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif length == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


_STRING_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n",
                   "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def string_text(value: str) -> str:
    """rapidjson's ``Writer::String`` for UTF-8: quotes, backslashes and controls escaped."""
    def escape(match):
        char = match.group()
        return _STRING_ESCAPES.get(char) or f"\\u{ord(char):04X}"
    return '"' + _NEEDS_ESCAPE.sub(escape, value) + '"'


_END = object()


def debug_string(value: Any, limit: int = _DEBUG_LIMIT) -> str:
    """``JsonValueToDebugString``: rapidjson's PrettyWriter (4-space indent, arrays on one
    line), no further event once ``limit`` bytes are out; NaN/Infinity end the text (the
    writer refuses them).  Iterative and lazy: request values may be deep or huge."""
    out: list[str] = []
    size = 0
    levels: list[list] = []  # per open container: [in_array, values written, its items]
    pending: list[tuple] = [("value", value)]  # the next event, when not a container's item

    def emit(text: str) -> None:
        nonlocal size
        out.append(text)
        size += len(text.encode("utf-8", "surrogatepass"))

    def prefix() -> None:  # PrettyPrefix
        if not levels:
            return
        level = levels[-1]
        if level[0]:
            if level[1] > 0:
                emit(", ")
        else:
            if level[1] > 0:
                emit(",\n" if level[1] % 2 == 0 else ": ")
            else:
                emit("\n")
            if level[1] % 2 == 0:
                emit(" " * (4 * len(levels)))
        level[1] += 1

    while size < limit and (pending or levels):
        if pending:
            kind, item = pending.pop()
        else:
            level = levels[-1]
            entry: Any = next(level[2], _END)
            if entry is _END:  # EndArray / EndObject
                levels.pop()
                if not level[0] and level[1]:
                    emit("\n" + " " * (4 * len(levels)))
                emit("]" if level[0] else "}")
                continue
            if level[0]:
                kind, item = "value", entry
            else:  # a member: its key now, its value as the next event
                kind, item = "key", entry[0]
                pending.append(("value", entry[1]))
        prefix()
        if kind == "key" or isinstance(item, str):
            emit(string_text(str(item)))
        elif isinstance(item, dict):
            emit("{")
            levels.append([False, 0, iter(item.items())])
        elif isinstance(item, list):
            emit("[")
            levels.append([True, 0, iter(item)])
        elif item is None:
            emit("null")
        elif item is True or item is False:
            emit("true" if item else "false")
        elif isinstance(item, int):
            emit(str(item))
        elif not math.isfinite(item):
            break
        else:
            emit(double_text(item))
    return "".join(out)


class RawJson(str):
    """JSON text written as is by ``json_bytes`` (a response part already formatted)."""


def dumps(value: Any) -> str:
    """Compact JSON, with ``RawJson`` parts inserted verbatim."""
    if isinstance(value, RawJson):
        return str.__str__(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value, separators=(",", ":"))


def json_bytes(payload: Any) -> bytes:
    """A response body (UTF-8)."""
    return dumps(payload).encode("utf-8", "surrogatepass")


__all__ = ["loads", "parse_object", "parse_error", "json_type", "debug_string", "double_text",
           "string_text", "RawJson", "dumps", "json_bytes"]
