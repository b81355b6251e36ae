"""Log set-up: one line per record, as text or JSON (`--log-format`).

The access log passes its fields as `extra={"fields": {...}}`; the JSON format puts them
at the top level of the line, the text format has them in the message already. Nothing
here knows a secret: callers never log one.

Log lines quote what clients and upstreams send (a model name, an upstream's reason): in
the text format control characters are escaped, so no value can end its line and write
one of its own (JSON escapes them by itself).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from ..proxy import access_log

# C0 controls, DEL, C1 controls (NEL among them) and the Unicode line and paragraph
# separators: everything a terminal or a log reader may take as a line end or a command.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROLS.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape: one record, one line."""
    if text.isprintable():  # the common case, checked in C: nothing to escape
        return text
    return text.translate(_CONTROLS)


class TextFormatter(logging.Formatter):
    """The text format: the record's line with its values' control characters escaped; a
    traceback after it keeps its own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))


def _json_ts(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int((created % 1) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": _json_ts(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class AccessLineWriter:
    """Writes access-log lines as the handler's formatter would (same stream, same lock),
    without building a LogRecord per line. The text format's time stamp is made once per
    second."""

    __slots__ = ("wants_fields", "_handler", "_second", "_stamp")

    def __init__(self, handler: logging.StreamHandler, fmt: str) -> None:
        self.wants_fields = fmt == "json"
        self._handler = handler
        self._second = -1
        self._stamp = ""

    def __call__(self, logger: str, message: str, fields: dict[str, Any] | None) -> None:
        now = time.time()
        if self.wants_fields:
            doc = {"ts": _json_ts(now), "level": "info", "logger": logger, "msg": message, **(fields or {})}
            line = json.dumps(doc, ensure_ascii=False, default=str)
        else:
            second = int(now)
            if second != self._second:  # logging's default asctime, local time
                self._second = second
                self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            line = f"{self._stamp},{int((now - second) * 1000):03d} INFO {logger}: {escape_controls(message)}"
        handler = self._handler
        with handler.lock:  # type: ignore[union-attr]
            try:
                handler.stream.write(line + "\n")
                handler.stream.flush()
            except (OSError, ValueError):
                pass  # stderr gone (closed pipe): a lost log line must not fail the request


def setup(debug: bool, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    access_log.use_writer(AccessLineWriter(handler, fmt))
    # httpcore's own debug trace is not ours to vouch for: keep it quiet so no header
    # (credentials included) can reach the log.
    logging.getLogger("httpcore").setLevel(logging.WARNING)
