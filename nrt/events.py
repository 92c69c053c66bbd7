"""NRT events as they arrive (JSON: a play or a sign-up), parsed and validated with the rules
of `userrep ingest`: the first step of the near-real-time path; bad ones get a reason.

Validation is also against what the stores can hold, so a bad event is rejected here, alone,
and never fails the micro-batch it came in: ids fit int64 (SQLite INTEGER, Feast int64),
strings and lists have length limits (MAX_EVENT_ID_CHARS, MAX_TEXT_CHARS, MAX_LIST), and an
event nests at most MAX_DEPTH levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from userrep import columns as C
from userrep.ingest.common import (
    FUTURE_TOLERANCE,
    check_unit,
    event_ids,
    parse_ts_checked,
    plausible_epoch_ns,
)

PLAY = "play"
SIGNUP = "signup"
TYPE = "type"  # optional field naming the kind; inferred from item_id / signup_ts when absent
US_PER_DAY = 86_400_000_000
_MIN_US, _MAX_US = pd.Timestamp.min.value // 1000 + 1, pd.Timestamp.max.value // 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # ids: SQLite INTEGER and Feast int64
MAX_EVENT_ID_CHARS = 256  # event ids are primary keys of the state's `applied` table
MAX_TEXT_CHARS = 256  # gender, country, each onboarding genre, the type field
MAX_LIST = 1000  # onboarding picks per sign-up (a real onboarding screen offers tens)
MAX_DEPTH = 8  # nesting levels of one event (an event is an object holding flat lists: 2)


@dataclass(frozen=True)
class Play:
    """A play (stream) of an item; ts in microseconds since the epoch, UTC."""

    event_id: str
    user_id: int
    item_id: int
    ts_us: int
    weight: float = 1.0


@dataclass(frozen=True)
class Signup:
    """A sign-up with its onboarding signals; ts_us is the sign-up time."""

    event_id: str
    user_id: int
    ts_us: int
    age: float | None = None
    gender: str = ""
    country: str = ""
    onboarding_items: tuple[int, ...] = ()
    onboarding_genres: tuple[str, ...] = ()


Event = Play | Signup


class Malformed(ValueError):
    """An event that cannot be applied; the message is the dead-letter reason."""


def _int(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key)
    if value is None or value == "":
        raise Malformed(f"missing {key}")
    if isinstance(value, bool):
        raise Malformed(f"non-integer {key}")
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise Malformed(f"{key} out of int64 range")
        return value
    if isinstance(value, str) and len(value) > 32:  # longer than any int64 written out
        raise Malformed(f"non-integer {key}")
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        raise Malformed(f"non-integer {key}") from None
    if not math.isfinite(f) or f != math.floor(f):
        raise Malformed(f"non-integer {key}")
    if not INT64_MIN <= f < 2**63:
        raise Malformed(f"{key} out of int64 range")
    return int(f)


def _short(value: object, limit: int = 60) -> str:
    """repr of a value for a reason, cut: a reason never carries a whole hostile payload."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(raw: dict[str, Any], key: str) -> str:
    """An optional short text field (gender, country): a string or a number, or absent."""
    value = raw.get(key)
    if value is None or value == "":
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise Malformed(f"{key} is not a string")
    text = str(value)
    if len(text) > MAX_TEXT_CHARS:
        raise Malformed(f"{key} longer than {MAX_TEXT_CHARS} characters")
    return text


def _too_deep(value: object, limit: int = MAX_DEPTH) -> bool:
    """Whether a parsed JSON value nests more than `limit` levels (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _fast_iso_us(text: str) -> int | None:
    """Microseconds of a plain ISO time (datetime.fromisoformat: ~20x faster than pandas);
    None for anything it cannot read exactly (nanoseconds, odd formats): pandas decides."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _parse_us(value: object, key: str, now_us: int, unit: str) -> int:
    """ingest's parse_ts_checked on one value (a plain ISO string takes a faster exact path):
    epoch numbers, as numbers or text, are in `unit` and checked for it (Malformed)."""
    if isinstance(value, str):
        fast = _fast_iso_us(value)
        if fast is not None:
            return fast
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{key} is not a time")
    cutoff_ns = (now_us + FUTURE_TOLERANCE.value // 1000) * 1000
    text = value.strip().lstrip("+-") if isinstance(value, str) else ""
    digits = text.isascii() and text.isdigit()  # ASCII digits only, as pyarrow reads them
    if isinstance(value, int) or digits:
        fast_ns = plausible_epoch_ns(int(value), unit, cutoff_ns)
        if fast_ns is not None:
            return fast_ns // 1000
    ns, bad, rules = parse_ts_checked(pa.array([value]), unit, cutoff_ns, key)
    for reason, mask in rules:
        if mask[0]:
            raise Malformed(reason)
    if bad[0]:
        raise ValueError("unparseable")
    return int(ns[0]) // 1000


def _ts_us(raw: dict[str, Any], key: str, now_us: int, unit: str = "s") -> int:
    """ISO text (naive = UTC) or epoch numbers in `unit` -> microseconds (floored, as DuckDB
    stores them), with ingest's rule (userrep.ingest.common.parse_ts_checked)."""
    value = raw.get(key)
    if value is None or value == "":
        raise Malformed(f"missing {key}")
    try:
        us = _parse_us(value, key, now_us, unit)
    except Malformed:
        raise
    except (ValueError, TypeError, OverflowError, pa.ArrowException):
        raise Malformed(f"unparseable {key}") from None
    if not _MIN_US <= us <= _MAX_US:  # as ingest: only times datetime64[ns] can hold
        raise Malformed(f"unparseable {key}")
    if us > now_us + FUTURE_TOLERANCE.value // 1000:
        raise Malformed(f"future {key}")
    return us


def _weight(raw: dict[str, Any]) -> float:
    value = raw.get(C.WEIGHT, 1.0)
    value = 1.0 if value is None else value
    try:
        w = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        w = math.nan
    if not math.isfinite(w):
        raise Malformed("NaN weight")
    if w < 0:
        raise Malformed("negative weight")
    return w


def _event_id(raw: dict[str, Any]) -> str | None:
    value = raw.get(C.EVENT_ID)
    if value is None or value == "":
        return None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise Malformed("event_id is not a string")
    text = str(value)
    if len(text) > MAX_EVENT_ID_CHARS:
        raise Malformed(f"event_id longer than {MAX_EVENT_ID_CHARS} characters")
    return text


def _list(raw: dict[str, Any], key: str, kind: type) -> tuple:
    value = raw.get(key) or []
    if not isinstance(value, list | tuple):
        raise Malformed(f"{key} is not a list")
    if len(value) > MAX_LIST:
        raise Malformed(f"{key} has more than {MAX_LIST} entries")
    if kind is int:
        try:
            return tuple(_int({key: v}, key) for v in value)
        except Malformed:
            raise Malformed(f"{key} is not a list of int64 integers") from None
    try:
        return tuple(_text({key: v}, key) for v in value)
    except Malformed:
        raise Malformed(
            f"{key} is not a list of strings (at most {MAX_TEXT_CHARS} chars)"
        ) from None


def _signup(raw: dict[str, Any], now_us: int, unit: str = "s") -> Signup:
    user = _int(raw, C.USER_ID)
    ts = _ts_us(raw, C.SIGNUP_TS, now_us, unit)
    age = raw.get(C.AGE)
    if age is not None:
        if isinstance(age, bool):
            raise Malformed("non-numeric age")
        try:
            age = float(age)
        except (TypeError, ValueError, OverflowError):
            raise Malformed("non-numeric age") from None
        age = age if math.isfinite(age) else None
    return Signup(
        _event_id(raw) or f"signup-{user}-{ts}",
        user,
        ts,
        age,
        _text(raw, C.GENDER),
        _text(raw, C.COUNTRY),
        _list(raw, C.ONBOARDING_ITEMS, int),
        _list(raw, C.ONBOARDING_GENRES, str),
    )


def _play(raw: dict[str, Any], now_us: int, unit: str = "s") -> Play:
    user, item = _int(raw, C.USER_ID), _int(raw, C.ITEM_ID)
    return Play(_event_id(raw) or "", user, item, _ts_us(raw, C.TS, now_us, unit), _weight(raw))


def parse_event(raw: object, now_us: int, ts_unit: str = "s") -> Event:
    """One JSON value -> a Play or a Signup; raises Malformed(reason). A play without an
    event_id gets "" here; parse_events fills in ingest's content-hash id. Epoch numbers
    in ts / signup_ts are in ts_unit, as `userrep ingest --ts-unit` reads them."""
    if not isinstance(raw, dict):
        raise Malformed("event is not a JSON object")
    if _too_deep(raw):
        raise Malformed(f"event nested deeper than {MAX_DEPTH} levels")
    kind = raw.get(TYPE) or (PLAY if C.ITEM_ID in raw else SIGNUP if C.SIGNUP_TS in raw else None)
    if kind == PLAY:
        return _play(raw, now_us, ts_unit)
    if kind == SIGNUP:
        return _signup(raw, now_us, ts_unit)
    if kind is None:
        raise Malformed("unknown event type: no item_id (play) or signup_ts (sign-up)")
    raise Malformed(f"unknown event type {_short(kind)}")


def _fill_play_ids(events: list[Event]) -> list[Event]:
    """Plays sent without an event_id get the id `userrep ingest` would give them."""
    missing = [i for i, e in enumerate(events) if isinstance(e, Play) and not e.event_id]
    if not missing:
        return events
    plays = [e for e in (events[i] for i in missing) if isinstance(e, Play)]
    frame = pd.DataFrame(
        {
            C.USER_ID: [p.user_id for p in plays],
            C.ITEM_ID: [p.item_id for p in plays],
            C.TS: pd.to_datetime([p.ts_us for p in plays], unit="us", utc=True),
            C.WEIGHT: [p.weight for p in plays],
        }
    )
    out = list(events)
    for i, play, eid in zip(missing, plays, event_ids(frame), strict=True):
        out[i] = Play(str(eid), play.user_id, play.item_id, play.ts_us, play.weight)
    return out


def parse_events(
    raws: Sequence[object], now: pd.Timestamp | None = None, ts_unit: str = "s"
) -> tuple[list[tuple[int, Event]], list[tuple[int, str]]]:
    """Raw JSON values -> ([(position, event)], [(position, reason)]) keeping input order."""
    now_us = (now or pd.Timestamp.now(tz="UTC")).value // 1000
    check_unit(ts_unit)
    good: list[tuple[int, Event]] = []
    bad: list[tuple[int, str]] = []
    for pos, raw in enumerate(raws):
        try:
            good.append((pos, parse_event(raw, now_us, ts_unit)))
        except Malformed as err:
            bad.append((pos, str(err)))
        except Exception as err:  # a value no rule foresaw: rejected alone, never the batch
            bad.append((pos, f"invalid event ({type(err).__name__})"))
    filled = _fill_play_ids([e for _, e in good])
    return [(pos, e) for (pos, _), e in zip(good, filled, strict=True)], bad
