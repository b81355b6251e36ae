"""Running the proxy: command line -> Settings -> serve (or the supervisor for
--workers N), signals, graceful drain."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import trio

from ..core.settings import ConfigError, Settings
from ..core.urls import without_userinfo
from ..proxy import ProxyApp
from ..server import Server, ServerLimits, serve
from ..store import ReasoningStore, StoreUnavailable, open_store
from .cli import load_settings, program_name
from .launcher import split_command
from .logs import setup as setup_logging
from .supervisor import HUP_IGNORED

log = logging.getLogger("rawproxy")


def _limits(settings: Settings) -> ServerLimits:
    return ServerLimits(
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        keepalive_timeout=settings.keepalive_timeout,
        request_timeout=settings.request_timeout,
        max_connections=settings.max_connections,
        max_inflight_body_bytes=settings.max_inflight_body_bytes,
    )


async def run(settings: Settings, store: ReasoningStore | None = None,
              reload_settings: Callable[[], Settings] | None = None) -> None:
    """`reload_settings` reads the configuration again (on SIGHUP, when a config file is in use)."""
    # Signals are taken from the start, so a SIGTERM during start-up drains too.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        await _run(settings, signals, store, reload_settings)


def _reload(app: ProxyApp, nursery: trio.Nursery, read: Callable[[], Settings]) -> None:
    """Route new requests by the config file as it is now; a file that fails its checks
    changes nothing. Pools of the old upstreams close once no request can still be on
    them (the request ceiling), so in-flight requests finish where they started."""
    try:
        new = read()
    except ConfigError as exc:
        log.error("SIGHUP: configuration not reloaded, the running one stays: %s", exc)
        return
    old = app.settings
    kept = [name for name in ("host", "port", "workers", "store", "access_keys", "secret", "max_connections",
                              "max_body_bytes", "max_header_bytes", "max_inflight_body_bytes", "log_format")
            if getattr(new, name) != getattr(old, name)]
    if kept:
        log.warning("SIGHUP: %s changed; that takes a restart, the running value stays", ", ".join(kept))
        new = replace(new, **{name: getattr(old, name) for name in kept})
    retired = app.reload(new)
    log.info("SIGHUP: configuration reloaded: upstreams %s",
             ", ".join(f"{u.name} ({without_userinfo(u.base_url)})" for u in new.upstream_list()),
             extra={"fields": {"event": "reloaded"}})

    async def close_later() -> None:
        await trio.sleep(old.request_timeout)
        for pool in retired:
            await pool.aclose()

    nursery.start_soon(close_later)


async def _run(settings: Settings, signals: AsyncIterator[int], store: ReasoningStore | None = None,
               reload_settings: Callable[[], Settings] | None = None) -> None:
    async with trio.open_nursery() as nursery:
        if settings.simulator:
            from ..simulator.app import SimulatorApp

            sim_port = await nursery.start(serve, SimulatorApp(), "127.0.0.1", 0)
            fmt = settings.upstream_format
            base = f"http://127.0.0.1:{sim_port}" + ("/v1" if fmt == "openai" else "/anthropic")
            settings = replace(settings, upstream=base, api_key="simulator-key", outbound_proxy="")
            log.info("no upstream key configured: serving against the built-in Kimi simulator "
                     "(%s format, %s); answers are scripted, not a real model.", fmt, base)
        worker = settings.worker_id is not None
        app = ProxyApp(settings, store=store if store is not None else open_store(settings))
        await nursery.start(app.run)  # writes remembered reasoning in the background
        if app.peers is not None:
            await nursery.start(app.peers.serve)  # answers the other workers' metrics scrapes
        server = Server(app, limits=_limits(settings), on_error=app.error_response,
                        on_stream_error=app.stream_error, admit=app.admit)
        port = await nursery.start(lambda task_status: server.serve(
            settings.host, settings.port, reuse_port=worker, task_status=task_status))
        if worker:
            nursery.start_soon(_stop_without_supervisor, os.getppid())
        elif settings.store != "memory":
            log.info("reasoning store %s", without_userinfo(settings.store))
        log.info(
            "%slistening on http://%s:%d -> %s (%s format)%s",
            f"worker {settings.worker_id} " if worker else "", settings.host, port,
            without_userinfo(settings.upstream), settings.upstream_format,
            f" via outbound proxy {without_userinfo(settings.outbound_proxy)}" if settings.outbound_proxy else "",
            extra={"fields": {"event": "listening", "port": port}},
        )
        if settings.access_keys and not settings.api_key:
            log.warning("access keys are set but no upstream key (--api-key): clients' keys are access "
                        "keys and are not forwarded, so upstream requests carry no key")
        async for signum in signals:
            if signum == signal.SIGHUP and reload_settings is not None and settings.config_path \
                    and not settings.simulator:
                _reload(app, nursery, reload_settings)
                continue
            if signum == signal.SIGHUP:
                log.warning(HUP_IGNORED)  # a closed terminal, or no config file to reload: never a stop
                continue
            log.info("%s: draining (up to %gs for in-flight requests)", signal.Signals(signum).name,
                     settings.graceful_timeout)
            break
        await _drain(server, signals, settings.graceful_timeout)
        await app.aclose()  # queued reasoning written (bounded), the store closed
        nursery.cancel_scope.cancel()  # the built-in simulator, the supervisor watch


async def _drain(server: Server, signals: AsyncIterator[int], grace: float) -> None:
    """Stop accepting and wait for in-flight requests up to `grace` seconds; a second
    signal (a second or more after the first) or the end of the grace cuts the rest,
    each client told in its dialect."""
    server.drain()
    started = trio.current_time()
    with trio.move_on_after(grace):
        async with trio.open_nursery() as waiting:
            async def impatient() -> None:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.warning(HUP_IGNORED)
                        continue
                    if trio.current_time() - started >= 1.0:
                        log.warning("second stop signal: cutting in-flight requests")
                        waiting.cancel_scope.cancel()
                        return

            waiting.start_soon(impatient)
            await server.wait_closed()
            waiting.cancel_scope.cancel()
    if len(server.connections):
        log.warning("cutting %d connection(s) still open", len(server.connections))
    server.abort()
    with trio.move_on_after(5.0):
        await server.wait_closed()


async def _stop_without_supervisor(parent: int) -> None:
    """A worker whose supervisor died stops as on SIGTERM (draining), not left holding the port."""
    from .supervisor import supervisor_gone

    while not supervisor_gone(parent):
        await trio.sleep(1.0)
    log.warning("supervisor (pid %d) is gone: stopping", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["check-config"]:
        return check_config(args[1:])
    command = split_command(args)
    if command is not None:  # `rawproxy [FLAGS] claude|codex|env ...`: the launcher, not a server
        from .launcher import main as launch

        return launch(*command)
    try:
        settings = load_settings(argv)
    except ConfigError as exc:
        print(f"{program_name()}: {exc}", file=sys.stderr)  # logging is not set up yet
        return 2
    setup_logging(settings.debug, settings.log_format)
    # Until the signal receivers take over, a SIGHUP (a closing terminal) must not kill.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _raise_fd_limit()
    _large_buffers_from_mmap()
    if settings.workers > 1 and settings.worker_id is None:
        from .supervisor import supervise

        return supervise(settings, list(sys.argv[1:] if argv is None else argv))
    try:
        store = open_store(settings)
    except StoreUnavailable as exc:
        log.error("%s", exc)  # one line, the cause included; exit 2 like any setting that cannot work
        return 2
    try:
        trio.run(run, settings, store, lambda: load_settings(argv))
    except KeyboardInterrupt:
        pass
    return 0


# Settings whose values are credentials: check-config shows whether they are set, never them.
_SECRET_FIELDS = {"api_key", "secret", "access_keys"}


def _shown(name: str, value: object) -> str:
    if name in _SECRET_FIELDS:
        count = len(value) if isinstance(value, tuple) else int(bool(value))
        return "(not set)" if not count else ("***" if not isinstance(value, tuple) else f"{count} key(s), ***")
    if name in ("store", "outbound_proxy", "upstream", "base_url") and isinstance(value, str):
        return without_userinfo(value) or '""'
    if name == "model_map":
        return ",".join(f"{glob}={target}" for glob, target in getattr(value, "rules", ()))
    if name == "models" and isinstance(value, tuple):
        return ",".join(f"{glob}={rename}" if rename else glob for glob, rename in value)
    return repr(value) if isinstance(value, str) else str(value)


def check_config(argv: list[str]) -> int:
    """`rawproxy check-config [--config PATH] [FLAGS]`: the settings a start would resolve,
    credentials masked; exit 2 with the reason when they would be refused."""
    from dataclasses import fields

    try:
        settings = load_settings(argv)
    except ConfigError as exc:
        print(f"{program_name()}: {exc}", file=sys.stderr)
        return 2
    print(f"# config file: {settings.config_path or '(none)'}")
    for f in fields(settings):
        if f.name not in ("upstreams", "config_path", "worker_id", "worker_dir"):
            print(f"{f.name} = {_shown(f.name, getattr(settings, f.name))}")
    for upstream in settings.upstream_list():
        print("\n[[upstreams]]")
        for f in fields(upstream):
            print(f"{f.name} = {_shown(f.name, getattr(upstream, f.name))}")
    return 0


def _raise_fd_limit() -> None:
    """Each proxied request holds two sockets: take every descriptor the hard limit allows."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else max(soft, 65536), hard))
    except (ImportError, ValueError, OSError):
        pass


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _large_buffers_from_mmap() -> None:
    """Buffers of 128 KiB and up (request bodies and their copies) straight from mmap, so
    their memory goes back to the system as each is freed. glibc otherwise raises that
    threshold to the size of every large buffer freed (up to 32 MiB) and serves later
    ones from its heaps, which fragment: after bursts of uploads of mixed sizes the
    process stayed tens of MB above idle. Setting it once stops that. Not glibc: nothing."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
