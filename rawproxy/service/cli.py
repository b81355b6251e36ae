"""The command line: flags and the environment -> the frozen Settings.

Environment names from the seed project keep working (ZENMUX_API_KEY, MOONSHOT_BASE_URL,
PROXY_HOST, PROXY_PORT, DEBUG); a flag beats its environment variable. This is the only
module that reads the environment for settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from .. import __version__
from ..core.settings import (
    DEFAULT_KIMI_MODELS,
    DEFAULT_MODEL_MAP,
    DEFAULT_UPSTREAM,
    ConfigError,
    ModelMap,
    Settings,
    UpstreamConfig,
    infer_format,
)
from ..core.sse import DEFAULT_MAX_EVENT_BYTES
from ..core.urls import is_loopback, without_userinfo
from ..store.redis_url import RedisURLError, is_redis_url, parse_redis_url
from ..upstream.outbound import resolve_outbound_proxy
from . import config_file

# The config file's key for each setting's (first) environment name; the others are the
# name without PROXY_, in lower case (PROXY_READ_TIMEOUT -> read_timeout).
_FILE_KEYS = {
    "MOONSHOT_BASE_URL": "upstream", "UPSTREAM_FORMAT": "upstream_format", "ZENMUX_API_KEY": "api_key",
    "MODEL_MAP": "model_map", "KIMI_MODELS": "kimi_models", "LOG_FORMAT": "log_format",
    "PROXY_API_KEYS": "proxy_api_keys",
}


def _file_key(env_name: str) -> str:
    return _FILE_KEYS.get(env_name) or env_name.removeprefix("PROXY_").lower()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def program_name(argv0: str | None = None) -> str:
    """How the user invoked us, for --help and messages: `python -m rawproxy` or the
    script's own name (`rawproxy`)."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    base = os.path.basename(argv0)
    if base in ("__main__.py", "-m", "") or base.startswith("python"):
        return "python -m rawproxy"
    return base


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or program_name(),
        description="A proxy that makes Kimi thinking models work behind Anthropic and OpenAI clients.",
        epilog="commands (after the flags, which set up the proxy they use): "
               "claude [ARGS...] runs Claude Code through the proxy; codex [ARGS...] runs Codex CLI through it; "
               "env claude|codex|openai prints the settings that point a client at the proxy",
    )
    p.add_argument("--version", action="version", version=f"rawproxy {__version__}")
    p.add_argument("--config", help="TOML config file (env RAWPROXY_CONFIG, default $XDG_CONFIG_HOME/rawproxy/"
                                    "config.toml when it exists); flags and the environment beat it")
    p.add_argument("--host", help="listen address (env PROXY_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (env PROXY_PORT, default 8000)")
    p.add_argument("--upstream", help=f"upstream base URL (env MOONSHOT_BASE_URL, default {DEFAULT_UPSTREAM})")
    p.add_argument("--upstream-format", choices=["anthropic", "openai"],
                   help="upstream dialect (env UPSTREAM_FORMAT; default inferred from the URL)")
    p.add_argument("--api-key", help="upstream key (env ZENMUX_API_KEY); empty: forward the client's key")
    p.add_argument("--model-map", help=f"glob=target,... first match wins (env MODEL_MAP, default {DEFAULT_MODEL_MAP})")
    p.add_argument("--kimi-models", help=f"globs of upstream models that get the Kimi repairs (env KIMI_MODELS, default {DEFAULT_KIMI_MODELS})")
    p.add_argument("--simulator", action="store_true",
                   help="serve against the built-in Kimi simulator (no key, no network)")
    p.add_argument("--debug", action="store_true", default=None, help="log each rewrite (env DEBUG)")
    p.add_argument("--max-body-bytes", type=int, help="request body limit (env PROXY_MAX_BODY_BYTES, default 32 MiB)")
    p.add_argument("--max-event-bytes", type=int, help="largest upstream stream event; past it the client gets an "
                                                      "error event (env PROXY_MAX_EVENT_BYTES, default 16 MiB)")
    p.add_argument("--read-timeout", type=float, help="upstream read timeout between two bytes, seconds (env PROXY_READ_TIMEOUT, default 600)")
    p.add_argument("--connect-timeout", type=float, help="upstream connect timeout, seconds (env PROXY_CONNECT_TIMEOUT, default 10)")
    p.add_argument("--workers", type=int, help="processes accepting on the port, under a supervisor (env PROXY_WORKERS, default 1)")
    p.add_argument("--store", help="remembered reasoning: memory, sqlite:PATH, redis://[user:password@]host:port/db, "
                                   "rediss://..., unix:///path.sock or redis+cluster://host:port,host:port (env "
                                   "PROXY_STORE; default memory, or a SQLite file under $XDG_STATE_HOME/rawproxy "
                                   "with --workers > 1)")
    p.add_argument("--store-ttl", type=float, help="seconds a remembered turn is kept (env PROXY_STORE_TTL, default 86400)")
    p.add_argument("--worker-id", type=int, help=argparse.SUPPRESS)  # set by the supervisor in its workers
    p.add_argument("--worker-dir", help=argparse.SUPPRESS)  # the supervisor's folder for the workers' metrics
    p.add_argument("--header-timeout", type=float, help="seconds a client has to send a request head (env PROXY_HEADER_TIMEOUT, default 30)")
    p.add_argument("--body-timeout", type=float, help="seconds a client has to send a request body after its head, 408 past it (env PROXY_BODY_TIMEOUT, default 60)")
    p.add_argument("--max-inflight-body-bytes", type=int,
                   help="request bodies held at once per process, 503 past it (env PROXY_MAX_INFLIGHT_BODY_BYTES, default 256 MiB)")
    p.add_argument("--keepalive-timeout", type=float, help="seconds an idle keep-alive connection stays open (env PROXY_KEEPALIVE_TIMEOUT, default 75)")
    p.add_argument("--request-timeout", type=float, help="ceiling on one whole request, stream included, seconds (env PROXY_REQUEST_TIMEOUT, default 3600)")
    p.add_argument("--max-header-bytes", type=int, help="request head limit, 431 above it (env PROXY_MAX_HEADER_BYTES, default 65536)")
    p.add_argument("--upstream-connections", type=int, help="upstream connection pool size; requests past it wait (env PROXY_UPSTREAM_CONNECTIONS, default 4096)")
    p.add_argument("--max-connections", type=int, help="open client connections; more get a 503 (env PROXY_MAX_CONNECTIONS, default 4096)")
    p.add_argument("--retries", type=int, help="upstream retries on connect errors and 429/5xx before the first byte (env PROXY_RETRIES, default 2)")
    p.add_argument("--retry-max-wait", type=float, help="longest wait before a retry, seconds; a longer Retry-After goes to the client (env PROXY_RETRY_MAX_WAIT, default 10)")
    p.add_argument("--graceful-timeout", type=float, help="seconds in-flight requests get to finish on SIGTERM/SIGINT (env PROXY_GRACEFUL_TIMEOUT, default 30)")
    p.add_argument("--secret", help="key that seals reasoning handed to Responses API clients (env PROXY_SECRET, "
                                    "at least 16 characters); give every replica the same one. Default: random per start")
    p.add_argument("--proxy-api-keys", help="comma-separated keys clients must present (env PROXY_API_KEYS); never sent upstream")
    p.add_argument("--allow-open", action="store_true", default=None,
                   help="allow an upstream key on a non-loopback address without access keys (env PROXY_ALLOW_OPEN)")
    p.add_argument("--outbound-proxy", help="proxy for upstream requests: http://, https://, socks5:// "
                                            "(default from HTTPS_PROXY / HTTP_PROXY, minus NO_PROXY)")
    p.add_argument("--log-format", choices=["text", "json"], help="log lines as text or JSON (env LOG_FORMAT, default text)")
    return p


def check_exposure(host: str, api_key: str, access_keys: tuple[str, ...], allow_open: bool) -> None:
    """Refuse to hand an upstream key to anyone who can reach a public port."""
    if api_key and not access_keys and not allow_open and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host or 'every interface'} with an upstream key and no access keys: "
            "anyone who can reach the port could spend the key. Set PROXY_API_KEYS=key1,key2 "
            "(or --proxy-api-keys) so clients must present a key, or allow it on purpose with "
            "--allow-open (PROXY_ALLOW_OPEN=1), e.g. behind a gateway that authenticates."
        )


def default_store_path(env: Mapping[str, str]) -> str:
    """Where the shared store lives when --workers > 1 and no --store: the XDG state dir."""
    state = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "rawproxy", "reasoning.sqlite3")


def _store(spec: str | None, workers: int, env: Mapping[str, str]) -> tuple[str, bool]:
    if spec is None:
        return ("sqlite:" + default_store_path(env), True) if workers > 1 else ("memory", False)
    kind, sep, path = spec.partition(":")
    if spec == "memory":
        if workers > 1:
            raise ConfigError(f"a memory store is not shared by {workers} workers: use --store sqlite:PATH")
        return spec, False
    if is_redis_url(spec):
        try:
            parse_redis_url(spec)
        except RedisURLError as exc:
            raise ConfigError(str(exc)) from None  # the message shows the URL without its password
        return spec, False
    if kind != "sqlite" or not sep or not path:
        raise ConfigError(f"PROXY_STORE must be memory, sqlite:PATH or a redis:// URL, not {without_userinfo(spec)!r}")
    return "sqlite:" + os.path.abspath(os.path.expanduser(path)), False


def _secret(value: str) -> str:
    if value and len(value) < 16:
        raise ConfigError("PROXY_SECRET must be at least 16 characters")
    return value


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    config_path = args.config or env.get("RAWPROXY_CONFIG") or config_file.default_path(env)
    from_file = config_file.load(config_path, env) if config_path else config_file.FileConfig("")
    in_file = from_file.values

    def pick(flag, *names, default=None):
        """Flag, then environment, then the config file, then the default."""
        if flag is not None:
            return flag
        for name in names:
            value = env.get(name)
            if value not in (None, ""):
                return value
        if names and _file_key(names[0]) in in_file:
            return in_file[_file_key(names[0])]
        return default

    def switch(flag, name):
        if flag is not None:
            return flag
        if env.get(name):
            return _truthy(env.get(name))
        return bool(in_file.get(name.removeprefix("PROXY_").lower(), False))

    upstream = pick(args.upstream, "MOONSHOT_BASE_URL", "RAWPROXY_UPSTREAM", default=DEFAULT_UPSTREAM)
    parts = urlsplit(upstream)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"upstream {upstream!r} is not an http(s) URL")
    fmt = pick(args.upstream_format, "UPSTREAM_FORMAT", default=None) or infer_format(upstream)
    if fmt not in ("anthropic", "openai"):
        raise ConfigError(f"UPSTREAM_FORMAT must be anthropic or openai, not {fmt!r}")
    try:
        port = int(pick(args.port, "PROXY_PORT", default=8000))
    except ValueError as exc:
        raise ConfigError(f"PROXY_PORT is not a number: {exc}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range")
    kimi = pick(args.kimi_models, "KIMI_MODELS", default=DEFAULT_KIMI_MODELS)

    def number(flag, name, default, kind=float):
        raw = pick(flag, name, default=default)
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {raw!r}") from None
        if value <= 0:
            raise ConfigError(f"{name} must be positive")
        return value

    def count(flag, name, default):
        raw = pick(flag, name, default=default)
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
        if value < 0:
            raise ConfigError(f"{name} must not be negative")
        return value

    host = pick(args.host, "PROXY_HOST", default="127.0.0.1")
    api_key = pick(args.api_key, "ZENMUX_API_KEY", "RAWPROXY_API_KEY", default="")
    access_keys = tuple(k.strip() for k in (pick(args.proxy_api_keys, "PROXY_API_KEYS", default="") or "").split(",")
                        if k.strip())
    allow_open = switch(args.allow_open, "PROXY_ALLOW_OPEN")
    upstream_connections = number(args.upstream_connections, "PROXY_UPSTREAM_CONNECTIONS", 4096, int)
    # A flag or environment variable naming the upstream means that one upstream, as
    # before config files; otherwise the file's [[upstreams]], in order.
    named_upstream = args.upstream is not None or any(env.get(n) for n in ("MOONSHOT_BASE_URL", "RAWPROXY_UPSTREAM"))
    upstreams: tuple[UpstreamConfig, ...] = ()
    if from_file.upstreams and not named_upstream and not args.simulator:
        upstreams = tuple(
            UpstreamConfig(
                name=u["name"], base_url=u["base_url"], format=u["format"] or infer_format(u["base_url"]),
                api_key=u["api_key"], models=u["models"], kimi=u["kimi"],
                outbound_proxy=resolve_outbound_proxy(u["outbound_proxy"], u["base_url"], env),
                connections=u["connections"] or upstream_connections,
            ) for u in from_file.upstreams)
        first = upstreams[0]
        upstream, fmt, api_key = first.base_url, first.format, first.api_key
    if not args.simulator:  # the simulator's key is a stand-in, worth nothing
        check_exposure(host, api_key or next((u.api_key for u in upstreams if u.api_key), ""), access_keys,
                       allow_open)
    log_format = (pick(args.log_format, "LOG_FORMAT", default="text") or "text").lower()
    if log_format not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT must be text or json, not {log_format!r}")

    workers = number(args.workers, "PROXY_WORKERS", 1, int)
    store, store_default = _store(pick(args.store, "PROXY_STORE"), workers, env)
    max_body_bytes = number(args.max_body_bytes, "PROXY_MAX_BODY_BYTES", 32 * 1024 * 1024, int)
    max_inflight_body_bytes = number(args.max_inflight_body_bytes, "PROXY_MAX_INFLIGHT_BODY_BYTES", 256 * 1024 * 1024, int)
    if max_inflight_body_bytes < max_body_bytes:
        raise ConfigError(f"PROXY_MAX_INFLIGHT_BODY_BYTES ({max_inflight_body_bytes}) is below PROXY_MAX_BODY_BYTES "
                          f"({max_body_bytes}): a body at the size limit could never be read")
    return Settings(
        host=host,
        port=port,
        upstream=upstream.rstrip("/"),
        upstream_format=fmt,
        api_key=api_key,
        model_map=ModelMap.parse(pick(args.model_map, "MODEL_MAP", default=DEFAULT_MODEL_MAP)),
        kimi_models=tuple(p.strip() for p in kimi.split(",") if p.strip()),
        debug=switch(args.debug, "DEBUG"),
        simulator=args.simulator,
        max_body_bytes=max_body_bytes,
        max_inflight_body_bytes=max_inflight_body_bytes,
        max_event_bytes=number(args.max_event_bytes, "PROXY_MAX_EVENT_BYTES", DEFAULT_MAX_EVENT_BYTES, int),
        read_timeout=number(args.read_timeout, "PROXY_READ_TIMEOUT", 600.0),
        connect_timeout=number(args.connect_timeout, "PROXY_CONNECT_TIMEOUT", 10.0),
        header_timeout=number(args.header_timeout, "PROXY_HEADER_TIMEOUT", 30.0),
        body_timeout=number(args.body_timeout, "PROXY_BODY_TIMEOUT", 60.0),
        keepalive_timeout=number(args.keepalive_timeout, "PROXY_KEEPALIVE_TIMEOUT", 75.0),
        request_timeout=number(args.request_timeout, "PROXY_REQUEST_TIMEOUT", 3600.0),
        max_header_bytes=number(args.max_header_bytes, "PROXY_MAX_HEADER_BYTES", 64 * 1024, int),
        max_connections=number(args.max_connections, "PROXY_MAX_CONNECTIONS", 4096, int),
        upstream_connections=upstreams[0].connections if upstreams else upstream_connections,
        graceful_timeout=number(args.graceful_timeout, "PROXY_GRACEFUL_TIMEOUT", 30.0),
        retries=count(args.retries, "PROXY_RETRIES", 2),
        retry_max_wait=number(args.retry_max_wait, "PROXY_RETRY_MAX_WAIT", 10.0),
        access_keys=access_keys,
        allow_open=allow_open,
        secret=_secret(pick(args.secret, "PROXY_SECRET", default="")),
        outbound_proxy=(upstreams[0].outbound_proxy if upstreams else resolve_outbound_proxy(
            args.outbound_proxy if args.outbound_proxy is not None else in_file.get("outbound_proxy"), upstream, env)),
        log_format=log_format,
        workers=workers,
        store=store,
        store_default=store_default,
        store_ttl=number(args.store_ttl, "PROXY_STORE_TTL", 24 * 3600.0),
        worker_id=args.worker_id,
        worker_dir=args.worker_dir or "",
        upstreams=upstreams,
        config_path=os.path.abspath(config_path) if config_path else "",
        breaker_failures=in_file.get("breaker_failures", 3),
        breaker_cooldown=in_file.get("breaker_cooldown", 30.0),
    )
