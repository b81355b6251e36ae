"""python -m rawproxy: flags and environment -> Settings -> serve."""

from __future__ import annotations

import logging
import sys

import trio

from .app import ProxyApp
from .config import ConfigError, Settings, load_settings
from .server import ServerLimits, serve

log = logging.getLogger("rawproxy")


def _limits(settings: Settings) -> ServerLimits:
    return ServerLimits(
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout,
        keepalive_timeout=settings.keepalive_timeout,
    )


async def run(settings: Settings) -> None:
    async with trio.open_nursery() as nursery:
        if settings.simulator:
            from .simulator.app import SimulatorApp

            sim_port = await nursery.start(serve, SimulatorApp(), "127.0.0.1", 0)
            fmt = settings.upstream_format
            base = f"http://127.0.0.1:{sim_port}" + ("/v1" if fmt == "openai" else "/anthropic")
            settings = _replace(settings, upstream=base, api_key="simulator-key")
            print(
                f"rawproxy: no upstream key configured: serving against the built-in Kimi simulator "
                f"({fmt} format, {base}); answers are scripted, not a real model.",
                flush=True,
            )
        app = ProxyApp(settings)
        port = await nursery.start(lambda task_status: serve(
            app, settings.host, settings.port, limits=_limits(settings), on_error=app.error_response,
            task_status=task_status))
        print(
            f"rawproxy listening on http://{settings.host}:{port} -> {settings.upstream} "
            f"({settings.upstream_format} format)",
            flush=True,
        )


def _replace(settings: Settings, **changes) -> Settings:
    from dataclasses import replace

    return replace(settings, **changes)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ConfigError as exc:
        print(f"rawproxy: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if settings.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpcore's own debug trace is not ours to vouch for: keep it quiet so no header
    # (credentials included) can reach the log.
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    try:
        trio.run(run, settings)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
