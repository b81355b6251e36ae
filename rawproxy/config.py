"""Settings: one frozen object built at start-up from flags and the environment.

Environment names from the seed project keep working (ZENMUX_API_KEY, MOONSHOT_BASE_URL,
PROXY_HOST, PROXY_PORT, DEBUG); a flag beats its environment variable. No other module
reads the environment.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence
from urllib.parse import urlsplit

from . import __version__

DEFAULT_UPSTREAM = "https://zenmux.ai/api/anthropic"
DEFAULT_MODEL_MAP = "claude-*=kimi-k2.5"
DEFAULT_KIMI_MODELS = "*kimi*,*moonshot*,*k2p5*"


class ConfigError(ValueError):
    """A setting that cannot work; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ModelMap:
    rules: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str) -> "ModelMap":
        rules = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            pattern, sep, target = item.partition("=")
            if not sep or not pattern.strip() or not target.strip():
                raise ConfigError(f"model map entry {item!r} is not glob=target")
            rules.append((pattern.strip(), target.strip()))
        return cls(tuple(rules))

    def map(self, model: str) -> str:
        """First matching glob wins; a model no rule names goes upstream unchanged."""
        for pattern, target in self.rules:
            if fnmatch.fnmatchcase(model, pattern):
                return target
        return model


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    upstream: str = DEFAULT_UPSTREAM
    upstream_format: str = "anthropic"
    api_key: str = field(default="", repr=False)
    model_map: ModelMap = field(default_factory=lambda: ModelMap.parse(DEFAULT_MODEL_MAP))
    kimi_models: tuple[str, ...] = tuple(DEFAULT_KIMI_MODELS.split(","))
    debug: bool = False
    simulator: bool = False
    # Reasoning store: bounded in bytes, entries expire.
    store_max_bytes: int = 64 * 1024 * 1024
    store_ttl: float = 24 * 3600.0
    # Limits and timeouts (seconds).
    max_body_bytes: int = 32 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    upstream_connections: int = 256

    def is_kimi(self, model: str) -> bool:
        name = model.lower()
        return any(fnmatch.fnmatchcase(name, p.lower()) for p in self.kimi_models)

    @property
    def upstream_messages_url(self) -> str:
        return upstream_url(self.upstream, self.upstream_format)


def infer_format(base_url: str) -> str:
    """A base whose path ends in /v1 is OpenAI-format (api.moonshot.ai/v1); else Anthropic."""
    path = urlsplit(base_url).path.rstrip("/")
    return "openai" if path.endswith("/v1") else "anthropic"


def upstream_url(base: str, fmt: str, endpoint: str = "") -> str:
    """Each ecosystem's convention: Anthropic bases get /v1/messages, OpenAI bases /chat/completions."""
    base = base.rstrip("/")
    if fmt == "anthropic":
        return f"{base}/v1/messages{endpoint}"
    return f"{base}/chat/completions"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rawproxy",
        description="A proxy that makes Kimi thinking models work behind Anthropic and OpenAI clients.",
    )
    p.add_argument("--version", action="version", version=f"rawproxy {__version__}")
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
    p.add_argument("--read-timeout", type=float, help="upstream read timeout between two bytes, seconds (env PROXY_READ_TIMEOUT, default 600)")
    p.add_argument("--connect-timeout", type=float, help="upstream connect timeout, seconds (env PROXY_CONNECT_TIMEOUT, default 10)")
    return p


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)

    def pick(flag, *names, default=None):
        if flag is not None:
            return flag
        for name in names:
            value = env.get(name)
            if value not in (None, ""):
                return value
        return default

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

    return Settings(
        host=pick(args.host, "PROXY_HOST", default="127.0.0.1"),
        port=port,
        upstream=upstream.rstrip("/"),
        upstream_format=fmt,
        api_key=pick(args.api_key, "ZENMUX_API_KEY", "RAWPROXY_API_KEY", default=""),
        model_map=ModelMap.parse(pick(args.model_map, "MODEL_MAP", default=DEFAULT_MODEL_MAP)),
        kimi_models=tuple(p.strip() for p in kimi.split(",") if p.strip()),
        debug=args.debug if args.debug is not None else _truthy(env.get("DEBUG")),
        simulator=args.simulator,
        max_body_bytes=number(args.max_body_bytes, "PROXY_MAX_BODY_BYTES", 32 * 1024 * 1024, int),
        read_timeout=number(args.read_timeout, "PROXY_READ_TIMEOUT", 600.0),
        connect_timeout=number(args.connect_timeout, "PROXY_CONNECT_TIMEOUT", 10.0),
    )
