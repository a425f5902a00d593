"""Engine events as JSON lines, and back (recorded streams for tests and replays of the UI).

Generic over the dataclasses in engine.messages, so a new event type needs no code here.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from enum import Enum
from typing import Any

from engine import messages
from engine.messages import EngineEvent


def _encode(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"type": type(obj).__name__,
                **{f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, tuple | list):
        return [_encode(x) for x in obj]
    return obj


def _decode(data: Any) -> Any:
    if isinstance(data, dict) and "type" in data:
        cls = getattr(messages, data["type"])
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = _decode(data[f.name])
            hint = hints[f.name]
            if isinstance(hint, type) and issubclass(hint, Enum):
                value = hint(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[f.name] = value
        return cls(**kwargs)
    if isinstance(data, list):
        return [_decode(x) for x in data]
    return data


def dumps(events: list[EngineEvent]) -> str:
    return "".join(json.dumps(_encode(ev), ensure_ascii=False) + "\n" for ev in events)


def loads(text: str) -> list[EngineEvent]:
    return [_decode(json.loads(line)) for line in text.splitlines() if line.strip()]
