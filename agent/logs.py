"""Log output for the agent: one readable line per record, or one JSON object per line for collectors.

Structured fields travel as stdlib ``extra=`` attributes (the gossip layer sets ``event``, ``member``,
``incarnation``, ``addr``); both formats print every such extra, so nothing logged is lost to format.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from agent.config.loader import LogFormat
from common.address import format_address

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def rfc3339(timestamp: float) -> str:
    """UTC with millisecond precision and a ``Z``, which every log tool parses."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record, JSON-ready (addresses as ``host:port``)."""
    extras: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD_ATTRS or key.startswith("_") or value is None:
            continue
        if (
            isinstance(value, tuple)
            and len(value) == 2
            and isinstance(value[0], str)
            and isinstance(value[1], int)
        ):
            value = format_address((value[0], value[1]))
        elif not isinstance(value, str | int | float | bool):
            value = str(value)
        extras[key] = value
    return extras


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record_extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{rfc3339(record.created)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = " ".join(f"{k}={_quote(v)}" for k, v in record_extras(record).items())
        if extras:
            line = f"{line} {extras}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(c.isspace() or c in '"=' for c in text) else text


class _AgentHandler(logging.StreamHandler[TextIO]):
    """Marks the handler this module installs, so configuring twice replaces it rather than doubling."""


def make_formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure_logging(fmt: LogFormat, level: str = "info", stream: TextIO | None = None) -> logging.Handler:
    """Send all logging to ``stream`` (stderr) in ``fmt``; other handlers (e.g. pytest's) are left alone."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _AgentHandler)]:
        root.removeHandler(old)
    handler = _AgentHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
