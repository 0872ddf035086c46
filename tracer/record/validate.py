"""What a recording's lines may hold, checked as they are read (tracer/record/recording.py),
so that a corrupt, truncated or foreign file is refused with the line that is wrong
instead of failing later, deep in the annotation.

The types come from the dataclasses a line becomes (their annotations); an event's
integers must fit struct hc_event's fields (bpf/halfclose.h, mirrored by RawEvent);
a scenario must be one this version knows. Pure.
"""
from __future__ import annotations

import ctypes
import dataclasses
import types
import typing

from tracer.record.event import Kind, RawEvent

# A Recording's fields that are lines of their own.
LINES = {"marks", "writes", "reads", "queries", "events", "packets"}
# Fields filled in by Event.from_json when a recording lacks them (older recordings).
EVENT_DEFAULTED = {"fd", "cpu", "seq", "ack_seq", "tcp_flags"}
_RANGES = {
    ctypes.c_uint64: (0, 2**64 - 1), ctypes.c_int64: (-2**63, 2**63 - 1),
    ctypes.c_uint32: (0, 2**32 - 1), ctypes.c_int32: (-2**31, 2**31 - 1),
    ctypes.c_uint16: (0, 2**16 - 1), ctypes.c_uint8: (0, 2**8 - 1),
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def fits(value, hint) -> bool:
    """Whether a JSON value fits a type annotation (int, str, X | None, list[X], dict[K, V])."""
    if hint is int:
        return _is_int(value)
    if hint in (str, bool, float):
        return isinstance(value, hint)
    if hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(fits(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is dict or hint is list:
        return isinstance(value, hint)
    return True  # nested dataclasses are checked line by line, not here


def check_fields(cls, d: dict, only: set[str] | None = None) -> None:
    """Every field of d that cls declares has its declared type (ValueError names the first
    that does not). Missing and unknown fields are left to cls itself (a TypeError there)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in d and (only is None or f.name in only) and not fits(d[f.name], hints[f.name]):
            raise ValueError(f"{f.name} is {d[f.name]!r}, not {_hint_name(hints[f.name])}")


def _hint_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def check_event(d: dict) -> None:
    """A recorded event: a known kind, every raw field there (or one that may be
    defaulted), each integer within its C type."""
    kind = d.get("kind")
    if not isinstance(kind, str) or kind not in Kind.__members__:
        raise ValueError(f"kind is {kind!r}, not one of the event kinds ({', '.join(Kind.__members__)})")
    for name, ctype in RawEvent._fields_:
        if name == "kind":
            continue
        if name not in d:
            if name in EVENT_DEFAULTED:
                continue
            raise ValueError(f"the event has no {name}")
        value = d[name]
        if name == "comm":
            if not isinstance(value, str):
                raise ValueError(f"comm is {value!r}, not a string")
            continue
        if name == "sk" and isinstance(value, str):
            try:
                value = int(value, 16)
            except ValueError:
                raise ValueError(f"sk is {value!r}, not a hexadecimal address") from None
        lo, hi = _RANGES[ctype]
        if not _is_int(value) or not lo <= value <= hi:
            raise ValueError(f"{name} is {value!r}, not an integer from {lo} to {hi} (struct hc_event)")


def check_meta(d: dict, recording_cls) -> None:
    """A meta line: its fields' types, a known scenario and family, state names as numbers
    with names."""
    from tracer.process import scenarios
    from tracer.process.scenario_file import ScenarioFileError, parse

    for name in LINES & d.keys():
        raise ValueError(f"{name} belong on lines of their own, not in the meta line")
    check_fields(recording_cls, d)
    scenario = d.get("scenario", "close")
    if d.get("scenario_text"):  # a user's scenario file, kept whole: judged as the run did
        try:
            sc = parse(d["scenario_text"], f"the scenario file kept in the recording ({scenario})", scenario)
        except ScenarioFileError as exc:
            raise ValueError(str(exc)) from None
        if sc.name != scenario:
            raise ValueError(f"scenario {scenario!r} names a file whose scenario is {sc.name!r}")
        scenarios.register(sc)
    elif not scenarios.known(scenario) and scenario != "watch":
        raise ValueError(f"scenario {scenario!r} is not one this version knows ({', '.join(scenarios.SCENARIOS)})")
    if d.get("family", "ipv4") not in ("ipv4", "ipv6"):
        raise ValueError(f"family is {d['family']!r}, not ipv4 or ipv6")
    names = d.get("state_names", {})
    if not isinstance(names, dict):
        raise ValueError("state_names is not an object")
    for k, v in names.items():
        if not (isinstance(k, str) and k.isdigit() and int(k) < 256 and isinstance(v, str)):
            raise ValueError(f"state_names has {k!r}: {v!r}, not a state number and its name")
