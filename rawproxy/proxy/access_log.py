"""The access log: one line per finished request, at a cost of a few microseconds.

Through `logging`, each line paid for the caller lookup, a LogRecord, the handler chain and
a formatter: 60-100 µs, about a tenth of a plain request's CPU. Here the line is formatted
once and handed to a writer the log set-up installs (`service.logs.setup`), which writes
it to the same stream, in the same format, under the same lock as every other record.
Without a writer (the app run by a test, or embedded), lines go through `logging`.
The logger's level still decides: `rawproxy.access` at WARNING or above writes nothing.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ..core.usage import TOKEN_KINDS
from .outcome import Outcome

log = logging.getLogger("rawproxy.access")


class LineWriter(Protocol):
    wants_fields: bool  # the JSON format puts each field at the top level of the line

    def __call__(self, logger: str, message: str, fields: dict[str, Any] | None) -> None: ...


_writer: LineWriter | None = None


def use_writer(writer: LineWriter | None) -> None:
    global _writer
    _writer = writer


def write(method: str, path: str, route: str, status: int, seconds: float, outcome: Outcome,
          tokens: dict[str, int]) -> None:
    if not log.isEnabledFor(logging.INFO):  # cached by logging: one dict lookup
        return
    repairs = ",".join(outcome.repairs) or "-"
    ms = seconds * 1000
    message = (f"{method} {path} {status} {ms:.1f}ms upstream={outcome.upstream_status} "
               f"model={outcome.model or '-'} repairs={repairs}")
    if outcome.stream:
        message += f" stream={outcome.stream}"
    if tokens:
        message += f" tokens={tokens.get('input', '-')}/{tokens.get('output', '-')}"
    writer = _writer
    fields: dict[str, Any] | None = None
    if writer is None or writer.wants_fields:
        fields = {
            "method": method, "route": route, "path": path, "status": status,
            "duration_ms": round(ms, 1), "upstream_status": outcome.upstream_status,
            "model": outcome.model or None, "repairs": outcome.repairs, "stream": outcome.stream,
            **{f"tokens_{kind}": tokens.get(kind) for kind in TOKEN_KINDS},
        }
    if writer is None:
        log.info("%s", message, extra={"fields": fields})
    else:
        writer(log.name, message, fields)
