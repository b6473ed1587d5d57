"""hookhost's Python plugin SDK: a plugin is a function per role.

    import hookhost

    def keep(event, config):
        return event.data.get("alarm_reason") in config.get("reasons", [])

    Filter = hookhost.filter(keep, only=["alarm"])

`hookhost.filter`, `hookhost.transform` and `hookhost.router` turn a
function `(event, config)` into the class componentize-py exports for that
role (name it `Filter`, `Transform` or `Router`). They parse the config once
per distinct text ({} when blank), give `event.data` as a dict, and turn any
exception into the event's plugin error with its type and message (an
uncaught exception would otherwise trap the instance). `only=[...]` lets
other event types through without a call: kept, unchanged, routed nowhere.

Build: componentize-py -d WIT -w filter-plugin componentize app --stub-wasi -o NAME.wasm
"""

import json

from componentize_py_types import Err
from wit_world.imports import log as _log

__all__ = ["Event", "filter", "transform", "router", "log"]

_LEVELS = {
    "trace": _log.Level.TRACE,
    "debug": _log.Level.DEBUG,
    "info": _log.Level.INFO,
    "warn": _log.Level.WARN,
    "error": _log.Level.ERROR,
}


def log(level, message):
    """Writes a log line through the host: level is trace|debug|info|warn|error."""
    _log.log(_LEVELS[level], str(message))


class Event:
    """One event: id, type, timestamp (RFC 3339 UTC), data (a dict, parsed on first use)."""

    __slots__ = ("id", "type", "timestamp", "data_text", "_data")

    def __init__(self, event):
        self.id = event.id
        self.type = event.event_type
        self.timestamp = event.timestamp
        self.data_text = event.data
        self._data = None

    @property
    def data(self):
        if self._data is None:
            self._data = json.loads(self.data_text)
        return self._data


# Parsed configs by text: a plugin sees one text per subscription using it.
_configs = {}
_KEPT = 16


def _config(text):
    parsed = _configs.get(text)
    if parsed is None:
        try:
            parsed = json.loads(text) if text.strip() else {}
        except ValueError as e:
            raise _Failure(f"config: {e}")
        if len(_configs) >= _KEPT:
            _configs.pop(next(iter(_configs)))
        _configs[text] = parsed
    return parsed


class _Failure(Exception):
    pass


def _call(function, event, config):
    """Runs the plugin's function; every exception becomes the call's error text."""
    try:
        return function(event, _config(config))
    except _Failure as e:
        raise Err(str(e))
    except Exception as e:
        raise Err(f"{type(e).__name__}: {e}")


def filter(keep, only=None):
    """`keep(event, config) -> bool`, exported as the plugin's filter."""
    only = frozenset(only or ())

    class Filter:
        def keep(self, event, config):
            if only and event.event_type not in only:
                return True
            return bool(_call(keep, Event(event), config))

    return Filter


def transform(rewrite, only=None):
    """`rewrite(event, config) -> None | {"type": str, "data": dict}`, exported as the transform.

    None (or a missing key) leaves that part unchanged."""
    from wit_world.exports import transform as _wit

    only = frozenset(only or ())

    class Transform:
        def transform(self, event, config):
            if only and event.event_type not in only:
                return _wit.Rewrite(event_type=None, data=None)
            out = _call(rewrite, Event(event), config) or {}
            data = out.get("data")
            return _wit.Rewrite(
                event_type=out.get("type"),
                data=None if data is None else json.dumps(data, separators=(",", ":")),
            )

    return Transform


def router(route, only=None):
    """`route(event, config) -> {"tags": [...], "subscriptions": [...]}` (either optional)."""
    from wit_world.exports import router as _wit

    only = frozenset(only or ())

    class Router:
        def route(self, event, config):
            if only and event.event_type not in only:
                return _wit.Destinations(subscriptions=[], tags=[])
            out = _call(route, Event(event), config) or {}
            return _wit.Destinations(
                subscriptions=list(out.get("subscriptions", [])),
                tags=list(out.get("tags", [])),
            )

    return Router
