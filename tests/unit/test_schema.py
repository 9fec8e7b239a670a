"""The event validator: a corpus of good events is accepted, each bad one is refused with its reason code."""
from __future__ import annotations

import json

import pytest

from streamrec import events as schema
from streamrec.events import Event, InvalidEvent, parse_event
from tests.helpers import BAD_IDS

NOW_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
EID = "6f1c2a9e-1b2c-4d3e-8f4a-0123456789ab"
CLICK = {
    "event_id": EID, "event_type": "click", "user_id": "u1", "item_id": "i9",
    "ts": NOW_MS - 60_000, "device": "phone", "session_id": "s1",
}
WATCH = {**CLICK, "event_type": "watch", "watch_seconds": 42.5}


def parse(raw, **kw) -> Event:
    return parse_event(raw, now_ms=NOW_MS, **kw)


DROP = object()  # a with_() value that removes the field


def with_(base: dict, **changes) -> dict:
    out = {**base, **changes}
    return {k: v for k, v in out.items() if v is not DROP}

GOOD = {
    "click, ts as epoch ms": (CLICK, NOW_MS - 60_000),
    "watch with context": (with_(WATCH, context={"page": "home", "rank": 3}), NOW_MS - 60_000),
    "ts ISO with Z": (with_(CLICK, ts="2023-11-14T22:13:20Z"), NOW_MS),
    "ts ISO with fraction and offset": (with_(CLICK, ts="2023-11-15T00:13:20.123+02:00"), NOW_MS + 123),
    "ts slightly ahead, within the skew": (with_(CLICK, ts=NOW_MS + 299_000), NOW_MS + 299_000),
    "watch_seconds zero, an int": (with_(WATCH, watch_seconds=0), NOW_MS - 60_000),
    "click with watch_seconds null": (with_(CLICK, watch_seconds=None), NOW_MS - 60_000),
    "context null": (with_(CLICK, context=None), NOW_MS - 60_000),
    "device of 64 chars": (with_(CLICK, device="d" * 64), NOW_MS - 60_000),
    "namespaced ids": (with_(CLICK, user_id="tenant:a.b@c-d_e", item_id="ml:1193", session_id="s" * 128),
                       NOW_MS - 60_000),
    "free text in device and context": (with_(CLICK, device="tëlé 電", context={"q": "a\nb"}), NOW_MS - 60_000),
}


@pytest.mark.parametrize("case", GOOD, ids=list(GOOD))
def test_accepts_good_events(case):
    obj, ts_ms = GOOD[case]
    for raw in (json.dumps(obj).encode(), json.dumps(obj), obj):
        event = parse(raw)
        assert event.ts_ms == ts_ms
        assert (event.user_id, event.item_id, event.event_type) == (obj["user_id"], obj["item_id"], obj["event_type"])
        assert event.watch_seconds == obj.get("watch_seconds")
        assert event.context == obj.get("context")


@pytest.mark.parametrize("case", GOOD, ids=list(GOOD))
def test_fast_path_takes_good_events_as_the_precise_validator_does(case):
    obj, _ = GOOD[case]
    for data in (json.dumps(obj).encode(), json.dumps(obj, indent=2).encode(), json.dumps(obj, ensure_ascii=False).encode()):
        fast = schema._vouch(data, NOW_MS, 300)
        precise = schema._validate(data, NOW_MS, 300)
        assert fast is not None, "plain valid events should not need the slow path"
        assert fast == precise and fast.to_json_bytes() == precise.to_json_bytes()


BAD = {
    "invalid UTF-8": (b'{"user_id": "\xff"}', "not_utf8", "byte"),
    "too big": (json.dumps(with_(CLICK, context={"pad": "x" * 70_000})), "oversize", "limit is 65536"),
    "truncated JSON": ('{"event_id": ', "not_json", "line 1"),
    "NaN": (json.dumps(WATCH).replace("42.5", "NaN"), "not_json", "line 1 column"),
    "huge number": (json.dumps(WATCH).replace("42.5", "1e400"), "number_out_of_range", "watch_seconds"),
    "huge number in context": (json.dumps(with_(CLICK, context={"a": [1e300]})).replace("1e+300", "1e400"),
                               "number_out_of_range", "context"),
    "duplicate key": (json.dumps(CLICK)[:-1] + ', "user_id": "u2"}', "duplicate_field", '"user_id" at line 1'),
    "duplicate key in context": ('{"context": {"a": 1, "a": 2}}', "duplicate_field", '"a"'),
    # The fast path keeps the last of duplicate keys; it must leave all of these to the precise one.
    "duplicate key, spaced": (json.dumps(CLICK)[:-1] + ', "user_id" : "u2"}', "duplicate_field", '"user_id"'),
    "duplicate key, escaped": (json.dumps(CLICK)[:-1] + ', "user\\u005fid": "u2"}', "duplicate_field", '"user_id"'),
    "duplicate key, comma in value": (json.dumps(CLICK)[:-1] + ', "user_id": "u,2"}', "duplicate_field", '"user_id"'),
    "duplicate key deep in context": (json.dumps(with_(CLICK, context={"a": [{"b": 1}]})).replace('"b": 1', '"b": 1, "b": 2'),
                                      "duplicate_field", '"b"'),
    "context nested too deep": (json.dumps(with_(CLICK, context={"a": "X"})).replace('"X"', "[" * 250 + "]" * 250),
                                "not_json", "recursion limit"),
    "number of over 4300 digits": (json.dumps(with_(CLICK, context={"a": "X"})).replace('"X"', "1" + "0" * 4400 + "e-4400"),
                                   "not_json", "number out of range"),
    "lone surrogate": (json.dumps(CLICK).replace('"u1"', '"\\ud800"'), "not_json", "escape"),
    "lone surrogate in text": (json.dumps(CLICK).replace("u1", "\ud800"), "not_utf8", "position"),
    "raw control character": (json.dumps(CLICK).replace("u1", "u\t1"), "not_json", "control"),
    "array": ("[1, 2]", "not_object", "array"),
    "string": ('"click"', "not_object", "string"),
    "misspelt field": (with_(WATCH, watch_secs=3), "unknown_field", "watch_secs"),
    "missing user_id": (with_(CLICK, user_id=DROP), "missing_field", "user_id"),
    "missing ts and device": (with_(CLICK, ts=DROP, device=DROP), "missing_field", "device, ts"),
    "user_id as int": (with_(CLICK, user_id=17), "wrong_type", "user_id: expected a string, got number 17"),
    "item_id null": (with_(CLICK, item_id=None), "wrong_type", "item_id: expected a string, got null"),
    "empty session_id": (with_(CLICK, session_id=""), "empty_value", "session_id"),
    "event_id int": (with_(CLICK, event_id=5), "wrong_type", "event_id"),
    "event_id not a uuid": (with_(CLICK, event_id="abc-123"), "bad_uuid", "'abc-123'"),
    "event_id uuid without dashes": (with_(CLICK, event_id=EID.replace("-", "")), "bad_uuid", "event_id"),
    "event_type purchase": (with_(CLICK, event_type="purchase"), "unknown_event_type", "'purchase'"),
    "event_type list": (with_(CLICK, event_type=["click"]), "unknown_event_type", "event_type"),
    "device too long": (with_(CLICK, device="d" * 65), "too_long", "device: 65 characters"),
    "device int": (with_(CLICK, device=1), "wrong_type", "device"),
    "ts naive ISO": (with_(CLICK, ts="2023-11-14T22:13:20"), "bad_timestamp", "no UTC offset"),
    "ts garbage": (with_(CLICK, ts="yesterday"), "bad_timestamp", "'yesterday'"),
    "ts in epoch seconds": (with_(CLICK, ts=NOW_MS // 1000), "bad_timestamp", "epoch seconds"),
    "ts float": (with_(CLICK, ts=float(NOW_MS)), "wrong_type", "ts: expected"),
    "ts bool": (with_(CLICK, ts=True), "wrong_type", "boolean"),
    "ts digits as string": (with_(CLICK, ts=str(NOW_MS)), "bad_timestamp", "ts"),
    "ts far ahead": (with_(CLICK, ts=NOW_MS + 301_000), "future_timestamp", "300s"),
    "ts ISO far ahead": (with_(CLICK, ts="2024-01-01T00:00:00Z"), "future_timestamp", "ts"),
    "watch without watch_seconds": (with_(WATCH, watch_seconds=DROP), "missing_field", "watch_seconds"),
    "watch_seconds null on watch": (with_(WATCH, watch_seconds=None), "wrong_type", "watch_seconds"),
    "watch_seconds string": (with_(WATCH, watch_seconds="10"), "wrong_type", "got string '10'"),
    "watch_seconds bool": (with_(WATCH, watch_seconds=True), "wrong_type", "got boolean true"),
    "negative watch time": (with_(WATCH, watch_seconds=-1), "negative_watch_time", "-1"),
    "watch_seconds an int beyond a float": (with_(WATCH, watch_seconds=10**400), "number_out_of_range", "watch_seconds"),
    "watch_seconds 1e308 (overflowed the fold)": (with_(WATCH, watch_seconds=1e308), "number_out_of_range", "24 h"),
    "watch_seconds a second over a day": (with_(WATCH, watch_seconds=86_400.001), "number_out_of_range", "24 h"),
    "watch_seconds on click": (with_(CLICK, watch_seconds=3), "unexpected_field", "watch_seconds"),
    "context a list": (with_(CLICK, context=["a"]), "wrong_type", "context: expected an object, got array"),
    # ids the API could never serve (one rule: streamrec.ids)
    **{f"user_id {name}": (with_(CLICK, user_id=value), reason, "user_id: ") for name, (value, reason) in BAD_IDS.items()},
    "item_id with a space": (with_(CLICK, item_id="i 1"), "bad_id", "item_id: 'i 1' has ' '"),
    "session_id with a slash": (with_(CLICK, session_id="s/1"), "bad_id", "session_id"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_rejects_bad_events_with_reason(case):
    raw, reason, detail_part = BAD[case]
    if isinstance(raw, dict):
        raw = json.dumps(raw)
    with pytest.raises(InvalidEvent) as err:
        parse(raw)
    assert err.value.reason == reason
    assert detail_part in err.value.detail


def test_limits_come_from_arguments():
    raw = json.dumps(with_(CLICK, ts=NOW_MS + 10_000))
    assert parse(raw, max_future_skew_s=20).ts_ms == NOW_MS + 10_000
    with pytest.raises(InvalidEvent, match="future_timestamp"):
        parse(raw, max_future_skew_s=5)
    with pytest.raises(InvalidEvent, match="oversize"):
        parse(raw, max_bytes=100)


def test_unserialisable_mapping_is_not_json():
    with pytest.raises(InvalidEvent) as err:
        parse(with_(CLICK, context={"tags": {"a", "b"}}))
    assert err.value.reason == "not_json"


CANONICAL = [
    CLICK,
    with_(WATCH, watch_seconds=7, context={"z": [1, {"b": None}], "a": "é", "n": 1e-7}),
    with_(WATCH, device='quote" back\\ tab\t nul\u0000 é 電', watch_seconds=5.0, context={"big": 1e21, "s": "\n"}),
    with_(WATCH, watch_seconds=0.1, context={"b": [2.25, {"d": None, "c": -0.0}], "a": 10**30, "é": True}),
    # floats that msgspec writes unlike json: 1.5e-05 as 0.000015, 1e+16 as 1e16
    with_(WATCH, watch_seconds=1.5e-5, context={"big": 1e16}),
    with_(WATCH, context={"small": [-2.5e-5]}),
]


@pytest.mark.parametrize("obj", CANONICAL)
def test_canonical_json_round_trips(obj):
    event = parse(json.dumps(obj, indent=2))
    data = event.to_json_bytes()
    assert parse(data) == event
    assert data == json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert json.loads(data)["ts"] == obj["ts"]


def test_canonical_form_normalises_ts_and_uuid_case():
    event = parse(with_(CLICK, ts="2023-11-14T22:13:20Z", event_id=EID.upper()))
    out = json.loads(event.to_json_bytes())
    assert out["ts"] == NOW_MS
    assert out["event_id"] == EID
    assert "watch_seconds" not in out and "context" not in out
