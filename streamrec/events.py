"""The click/watch event contract and its validator (pure: no I/O).

``parse_event`` turns raw input into an ``Event`` or raises ``InvalidEvent``
with a short stable ``reason`` code (DLQ header, metrics) and a ``detail`` that
names the field and the problem. It sits on the ingest hot path, so a valid
event is vouched for by a fast path (msgspec decodes and type-checks it in C)
and only what that path cannot vouch for goes through the precise validator
(jiter, strict, then one check per field), which finds the exact reason.
"""
from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

import jiter
import msgspec

from streamrec.ids import ID_PATTERN, ID_PATTERN_PY, MAX_ID_CHARS, id_problem

EventType = Literal["click", "watch"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
MAX_DEVICE_CHARS = 64
# Earliest accepted event time, 1990-01-01 (MovieLens starts in 1995): anything before
# is almost surely epoch *seconds* sent where milliseconds are expected.
MIN_TS_MS = 631_152_000_000
# One watch cannot last longer than a day: a bound on what is physically possible keeps every
# decayed sum finite (two watches of 1e308 s once overflowed them to inf and stopped the job).
MAX_WATCH_SECONDS = 86_400

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_FLOAT_MAX = sys.float_info.max


class InvalidEvent(ValueError):
    """Input that is not a valid event; ``reason`` is a stable code, ``detail`` says precisely why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN_PY)]


class Event(msgspec.Struct, frozen=True, omit_defaults=True):
    """A valid event: the one declaration of its fields, which the wire type (``_Wire``) and the field sets are
    made from. Laid out as its canonical JSON object: ``ts`` is ``ts_ms`` (epoch ms), absent optionals omitted.

    The annotations are the wire's checks (msgspec makes them as it decodes, ``_vouch``); constructing an
    Event checks nothing, so only ``parse_event`` makes them. A msgspec Struct, not a frozen dataclass: it is
    built in C on the hot path, and written as canonical JSON by itself.
    """

    event_id: str
    event_type: EventType
    user_id: _Id
    item_id: _Id
    ts_ms: int = msgspec.field(name="ts")
    device: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_DEVICE_CHARS)]
    session_id: _Id
    watch_seconds: int | float | None = None
    context: dict | None = None

    def to_dict(self) -> dict:
        """The canonical JSON object: ``ts`` as epoch ms, absent optionals omitted."""
        return msgspec.to_builtins(self)

    def to_json_bytes(self) -> bytes:
        """Canonical UTF-8 JSON: sorted keys, no spaces; ``parse_event`` of it gives back an equal Event.

        Equal to ``json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)``.
        This runs for every event, so msgspec writes it whenever its output is the same: it always is
        but for floats outside [1e-4, 1e16), which it writes in another (equally valid) notation.
        """
        ws, context = self.watch_seconds, self.context
        if (type(ws) is float and _written_differently(ws)) or (context and _find_float(context, _written_differently)):
            return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        return _encode_canonical(self)


_FIELDS = msgspec.structs.fields(Event)
REQUIRED = frozenset(f.encode_name for f in _FIELDS if f.required)
ALLOWED = frozenset(f.encode_name for f in _FIELDS)


_encode_canonical = msgspec.json.Encoder(order="sorted").encode


def _written_differently(x: float) -> bool:
    """True for the floats msgspec writes unlike ``json`` (and for infinity, which JSON cannot carry)."""
    return not (x == 0 or 1e-4 <= abs(x) < 1e16)


def as_bytes(raw: bytes | str | Mapping | Any) -> bytes:
    """The input as the bytes it would arrive as on the wire (what the DLQ keeps); parsed values as compact JSON."""
    if type(raw) is bytes:
        return raw
    if isinstance(raw, (bytearray, memoryview)):
        return bytes(raw)
    if isinstance(raw, str):
        try:
            return raw.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidEvent("not_utf8", f"text has a character UTF-8 cannot encode at position {e.start}") from None
    # A mapping, or any other already-parsed JSON value (one element of an HTTP batch, say).
    try:
        text = json.dumps(raw, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidEvent("not_json", f"{type(raw).__name__} value cannot be written as JSON: {e}") from None
    return as_bytes(text)


def _decode(data: bytes) -> Any:
    # Strict JSON: no NaN/Infinity, no duplicate keys (Python's json would keep the last one silently).
    try:
        return jiter.from_json(data, allow_inf_nan=False, catch_duplicate_keys=True, cache_mode="keys")
    except ValueError as e:
        message = str(e)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidEvent("not_utf8", f"invalid UTF-8 at byte {e.start}") from None
    if message.startswith("Detected duplicate key"):  # jiter's wording; were it to change, still rejected as not_json
        raise InvalidEvent("duplicate_field", message.removeprefix("Detected "))
    raise InvalidEvent("not_json", message)


def _find_float(container: dict | list, test) -> bool:
    """Whether ``test`` holds for any float in ``container``, however deeply nested."""
    for v in container.values() if type(container) is dict else container:
        t = type(v)
        if t is float:
            if test(v):
                return True
        elif (t is dict or t is list) and _find_float(v, test):
            return True
    return False


def _is_infinite(x: float) -> bool:
    # A literal too large for a float (1e400) parses to infinity, which the canonical form cannot carry.
    return not math.isfinite(x)


def _show(value: Any) -> str:
    """``repr`` cut short: details quote the offending value without echoing a huge one."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_CONTAINERS: dict[type, str] = {dict: "object", list: "array"}


def _got(value: Any) -> str:
    """How a detail names a wrong value: its JSON type, and the value itself when it is short."""
    if value is None:
        return "null"
    if type(value) is bool:
        return f"boolean {str(value).lower()}"
    if type(value) in (int, float):
        return f"number {value}"
    if type(value) is str:
        return f"string {_show(value)}"
    return _CONTAINERS.get(type(value), type(value).__name__)


def _string(obj: dict, name: str) -> str:
    value = obj[name]
    if type(value) is not str:
        raise InvalidEvent("wrong_type", f"{name}: expected a string, got {_got(value)}")
    if not value:
        raise InvalidEvent("empty_value", f"{name}: must not be empty")
    return value


def _id(obj: dict, name: str) -> str:
    value = _string(obj, name)
    problem = id_problem(value)
    if problem is not None:
        raise InvalidEvent("too_long" if len(value) > MAX_ID_CHARS else "bad_id", f"{name}: {_show(value)} {problem}")
    return value


def _timestamp_ms(value: Any, now_ms: int, max_future_skew_s: float) -> int:
    if type(value) is int:
        ts_ms = value
    elif type(value) is str:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent("bad_timestamp", f"ts: {_show(value)} is not an ISO-8601 date-time") from None
        if dt.tzinfo is None:
            raise InvalidEvent("bad_timestamp", f"ts: {_show(value)} has no UTC offset (add 'Z' or '+00:00')")
        ts_ms = (dt - _EPOCH) // _MS
    else:
        raise InvalidEvent("wrong_type", f"ts: expected an ISO-8601 string or integer epoch milliseconds, got {_got(value)}")
    if ts_ms < MIN_TS_MS:
        raise InvalidEvent("bad_timestamp", f"ts: {_show(value)} is before 1990-01-01 (epoch seconds instead of milliseconds?)")
    if ts_ms > now_ms + max_future_skew_s * 1000:
        raise InvalidEvent("future_timestamp", f"ts: {_show(value)} is more than {max_future_skew_s:g}s in the future")
    return ts_ms


def _watch_seconds(obj: dict, event_type: str) -> float | None:
    value = obj.get("watch_seconds")
    if event_type == "click":
        if value is not None:
            raise InvalidEvent("unexpected_field", "watch_seconds: only watch events carry it, this is a click")
        return None
    if "watch_seconds" not in obj:
        raise InvalidEvent("missing_field", "watch_seconds: required for watch events")
    if type(value) is not int and type(value) is not float:
        raise InvalidEvent("wrong_type", f"watch_seconds: expected a number, got {_got(value)}")
    if not -_FLOAT_MAX <= value <= _FLOAT_MAX:  # also an int too large for a float (math.isfinite would raise)
        raise InvalidEvent("number_out_of_range", f"watch_seconds: {_show(value)} is beyond a float's range")
    if value < 0:
        raise InvalidEvent("negative_watch_time", f"watch_seconds: must be >= 0, got {value}")
    if value > MAX_WATCH_SECONDS:
        raise InvalidEvent("number_out_of_range", f"watch_seconds: {_show(value)} is more than {MAX_WATCH_SECONDS} (24 h)")
    return value


def parse_event(
    raw: bytes | str | Mapping,
    *,
    now_ms: int | None = None,
    max_bytes: int = 65536,
    max_future_skew_s: float = 300,
) -> Event:
    """Validate one event; ``now_ms`` (default: the clock) bounds how far ahead ``ts`` may be."""
    data = as_bytes(raw)
    if len(data) > max_bytes:
        raise InvalidEvent("oversize", f"event is {len(data)} bytes, the limit is {max_bytes}")
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    return _vouch(data, now_ms, max_future_skew_s) or _validate(data, now_ms, max_future_skew_s)


def _wire_field(f: msgspec.structs.FieldInfo) -> tuple:
    """An Event field as sent: ``ts`` may be ISO-8601 text too; an optional may be absent (UNSET), which the
    key count in ``_vouch`` must tell from null."""
    if f.name == "ts_ms":
        return f.encode_name, int | str
    return (f.encode_name, f.type) if f.required else (f.encode_name, f.type | msgspec.UnsetType, msgspec.UNSET)


_Wire = msgspec.defstruct(
    "_Wire", [_wire_field(f) for f in _FIELDS], forbid_unknown_fields=True, module=__name__,
    namespace={"__doc__": "An event as sent, with every check msgspec can make in C while it decodes."},
)
# Any: _Wire's fields are made at import time, which a type checker cannot see.
_decode_wire: Callable[[bytes], Any] = msgspec.json.Decoder(_Wire).decode
# jiter refuses numbers of more than 4300 digits and nesting deeper than 200, where msgspec
# goes on; input long enough, or with brackets enough, to hold either is left to the precise path.
_VOUCH_MAX_BYTES = 4300
_VOUCH_MAX_BRACKETS = 200


def _vouch(data: bytes, now_ms: int, max_future_skew_s: float) -> Event | None:
    """The Event if ``data`` is a plainly valid event, else None: the precise validator then decides.

    Accepts only what ``_validate`` accepts, giving an equal Event.
    """
    if len(data) > _VOUCH_MAX_BYTES or data.count(b"{") + data.count(b"[") > _VOUCH_MAX_BRACKETS:
        return None
    try:
        wire = _decode_wire(data)  # also refuses numbers beyond a float's range
    except ValueError:  # msgspec.DecodeError and UnicodeDecodeError
        return None
    watch_seconds, context = wire.watch_seconds, wire.context
    # msgspec keeps the last of duplicate keys silently, which would drop a comma from the decoded
    # value's count; commas inside strings can only make the input's count higher than it.
    commas = len(REQUIRED) - 1 + (watch_seconds is not msgspec.UNSET) + (context is not msgspec.UNSET)
    if type(context) is dict:
        commas += _commas(context)
    if data.count(b",") != commas or not _UUID.fullmatch(wire.event_id):
        return None
    try:
        ts_ms = _timestamp_ms(wire.ts, now_ms, max_future_skew_s)
    except InvalidEvent:
        return None
    if wire.event_type == "click":
        if watch_seconds is msgspec.UNSET:
            watch_seconds = None
        elif watch_seconds is not None:
            return None
    elif type(watch_seconds) not in (int, float) or not 0 <= watch_seconds <= MAX_WATCH_SECONDS:
        return None
    return Event(
        wire.event_id.lower(), wire.event_type, wire.user_id, wire.item_id, ts_ms, wire.device, wire.session_id,
        watch_seconds, None if context is msgspec.UNSET else context,
    )


def event_json_schema() -> dict:
    """The event as JSON Schema (for OpenAPI), made from ``_Wire``; ``parse_event`` checks more."""
    schema = msgspec.json.schema(_Wire)["$defs"]["_Wire"]
    props = schema["properties"]
    for name in ("user_id", "item_id", "session_id"):
        props[name]["pattern"] = ID_PATTERN  # ECMA-262 has no \Z; there ``$`` already ends the text
    props["event_id"]["format"] = "uuid"
    props["ts"]["description"] = "epoch milliseconds, or an ISO-8601 date-time with a UTC offset"
    props["watch_seconds"]["description"] = f"required for watch events, 0..{MAX_WATCH_SECONDS}; absent for clicks"
    schema.update(title="Event", description="A click or watch event (the validator checks more than this schema says).")
    return schema


def _commas(container: dict | list) -> int:
    """The commas of ``container`` in JSON, strings aside: one between each two members or items."""
    n = len(container) - 1 if container else 0
    for v in container.values() if type(container) is dict else container:
        if type(v) is dict or type(v) is list:
            n += _commas(v)
    return n


def _validate(data: bytes, now_ms: int, max_future_skew_s: float) -> Event:
    """The precise validator: the Event, or ``InvalidEvent`` naming the first problem found."""
    obj = _decode(data)
    if type(obj) is not dict:
        raise InvalidEvent("not_object", f"an event is a JSON object, got {_got(obj)}")

    keys = obj.keys()
    # Unknown fields are rejected rather than dropped: a misspelt field name
    # ("watch_secs") must surface at the producer, not vanish from the data.
    if not keys <= ALLOWED:
        raise InvalidEvent("unknown_field", f"{', '.join(sorted(keys - ALLOWED))}: not part of the event schema")
    if not keys >= REQUIRED:
        raise InvalidEvent("missing_field", f"{', '.join(sorted(REQUIRED - keys))}: required")

    event_id = obj["event_id"]
    if type(event_id) is not str:
        raise InvalidEvent("wrong_type", f"event_id: expected a UUID string, got {_got(event_id)}")
    if not _UUID.fullmatch(event_id):
        raise InvalidEvent("bad_uuid", f"event_id: {_show(event_id)} is not a UUID (8-4-4-4-12 hex digits)")

    event_type = obj["event_type"]
    if event_type not in EVENT_TYPES:  # also false for non-strings
        raise InvalidEvent("unknown_event_type", f"event_type: {_show(event_type)} is not one of {', '.join(EVENT_TYPES)}")

    device = _string(obj, "device")
    if len(device) > MAX_DEVICE_CHARS:
        raise InvalidEvent("too_long", f"device: {len(device)} characters, at most {MAX_DEVICE_CHARS}")

    context = obj.get("context")
    if context is not None:
        if type(context) is not dict:
            raise InvalidEvent("wrong_type", f"context: expected an object, got {_got(context)}")
        if _find_float(context, _is_infinite):
            raise InvalidEvent("number_out_of_range", "context: holds a number beyond a float's range")

    return Event(
        event_id.lower(),
        event_type,
        _id(obj, "user_id"),
        _id(obj, "item_id"),
        _timestamp_ms(obj["ts"], now_ms, max_future_skew_s),
        device,
        _id(obj, "session_id"),
        _watch_seconds(obj, event_type),
        context,
    )
