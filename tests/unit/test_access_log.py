"""The access log's own writer prints the lines the logging set-up would: same prefix and
message in the text format (control characters escaped), same document in JSON, and
nothing when the access logger's level is above INFO."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from rawproxy.core.usage import TokenUsage
from rawproxy.proxy import access_log
from rawproxy.proxy.outcome import Outcome
from rawproxy.service import logs


@pytest.fixture
def output():
    stream = io.StringIO()
    old = logging.getLogger().handlers[:], logging.getLogger().level
    yield stream
    access_log.use_writer(None)
    root = logging.getLogger()
    root.handlers[:] = old[0]
    root.setLevel(old[1])
    logging.getLogger("rawproxy.access").setLevel(logging.NOTSET)


def configure(fmt: str, stream: io.StringIO) -> None:
    logs.setup(False, fmt)
    handler = logging.getLogger().handlers[0]
    handler.setStream(stream)  # type: ignore[attr-defined]


def outcome() -> Outcome:
    out = Outcome(client="test")
    out.model = "kimi-k2.5\nINFO rawproxy.access: forged"
    out.upstream_status = 200
    out.repairs = ["reasoning_restored"]
    out.stream = "complete"
    out.usage = TokenUsage()
    return out


def test_a_text_line_matches_the_formatter_and_stays_one_line(output):
    configure("text", output)
    access_log.write("POST", "/v1/messages", "/v1/messages", 200, 0.0123, outcome(), {"input": 5, "output": 7})
    logging.getLogger("rawproxy.access").info("via logging")
    fast, slow = output.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO rawproxy\.access: "
    assert re.match(stamp, fast) and re.match(stamp, slow)
    assert fast.split(": ", 1)[1] == ("POST /v1/messages 200 12.3ms upstream=200 model=kimi-k2.5\\nINFO "
                                      "rawproxy.access: forged repairs=reasoning_restored stream=complete tokens=5/7")


def test_a_json_line_carries_every_field(output):
    configure("json", output)
    access_log.write("POST", "/v1/messages", "/v1/messages", 200, 0.0123, outcome(), {"input": 5, "output": 7})
    doc = json.loads(output.getvalue())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc.pop("ts"))
    assert doc == {"level": "info", "logger": "rawproxy.access", "msg": doc["msg"], "method": "POST",
                   "route": "/v1/messages", "path": "/v1/messages", "status": 200, "duration_ms": 12.3,
                   "upstream_status": 200, "model": "kimi-k2.5\nINFO rawproxy.access: forged",
                   "repairs": ["reasoning_restored"], "stream": "complete", "tokens_input": 5, "tokens_output": 7,
                   "tokens_cached_input": None, "tokens_reasoning": None}


def test_the_access_loggers_level_still_decides(output):
    configure("text", output)
    logging.getLogger("rawproxy.access").setLevel(logging.WARNING)
    access_log.write("GET", "/v1/models", "/v1/models", 200, 0.001, Outcome(client="test"), {})
    assert output.getvalue() == ""
