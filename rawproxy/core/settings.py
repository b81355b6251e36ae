"""Settings: the one frozen object built at start-up and passed down.

Pure data and the small rules that read it (model map, Kimi model globs, upstream URL
convention). Building it from flags, the environment and files is `rawproxy.service.cli`'s
job; no module below the service layer reads the environment.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .dialects import UpstreamFormat
from .sse import DEFAULT_MAX_EVENT_BYTES

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
class UpstreamConfig:
    """One upstream a request may go to: where, in which dialect, with which key, for
    which models. `models` holds (glob, rename) pairs matched against the model after the
    model map; an empty rename sends the model unchanged."""

    name: str
    base_url: str
    format: UpstreamFormat
    api_key: str = field(default="", repr=False)
    models: tuple[tuple[str, str], ...] = (("*", ""),)
    # True/False: always/never give this upstream's requests the Kimi repair; None: by
    # Settings.kimi_models.
    kimi: bool | None = None
    outbound_proxy: str = field(default="", repr=False)
    connections: int = 4096

    def serves(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, glob) for glob, _ in self.models)

    def rename(self, model: str) -> str:
        """The name this upstream knows the model by: the first matching glob's rename."""
        for glob, target in self.models:
            if fnmatch.fnmatchcase(model, glob):
                return target or model
        return model


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    upstream: str = DEFAULT_UPSTREAM
    upstream_format: UpstreamFormat = "anthropic"
    api_key: str = field(default="", repr=False)
    model_map: ModelMap = field(default_factory=lambda: ModelMap.parse(DEFAULT_MODEL_MAP))
    kimi_models: tuple[str, ...] = tuple(DEFAULT_KIMI_MODELS.split(","))
    debug: bool = False
    simulator: bool = False
    # Reasoning store: bounded in bytes, entries expire.
    store_max_bytes: int = 64 * 1024 * 1024
    store_ttl: float = 24 * 3600.0
    # "memory" (one process), "sqlite:PATH" (shared by workers, kept across restarts) or a
    # Redis URL (shared by replicas; it may carry a password, so it is never in a repr).
    store: str = field(default="memory", repr=False)
    store_default: bool = False  # store was chosen for --workers > 1, not named by the user
    # Processes accepting on one port; worker_id is set in each worker a supervisor starts.
    workers: int = 1
    worker_id: int | None = None
    # The supervisor's private folder where workers answer each other's metrics scrapes.
    worker_dir: str = ""
    # Limits and timeouts (seconds).
    max_body_bytes: int = 32 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    # One upstream stream event (a whole tool call's arguments can be megabytes); past it
    # the client gets an error event instead of the proxy buffering without end.
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    header_timeout: float = 30.0
    body_timeout: float = 60.0        # from a request's head to its body's last byte
    # Bytes of request bodies held at once per process, each until its answer is finished,
    # plus what parsing them builds while it is alive; past it a client gets a 503.
    max_inflight_body_bytes: int = 256 * 1024 * 1024
    keepalive_timeout: float = 75.0
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    # Each client request holds at most one upstream connection: the client cap bounds it.
    upstream_connections: int = 4096
    request_timeout: float = 3600.0   # whole request, a stream included: a ceiling for runaways
    max_connections: int = 4096       # open client connections; the next ones get a 503
    graceful_timeout: float = 30.0    # SIGTERM/SIGINT: in-flight requests get this long to finish
    # Upstream retries before the client has a byte: how many, and the longest wait.
    retries: int = 2
    retry_max_wait: float = 10.0
    # Access control: keys clients must present; allow_open permits a key-less proxy that
    # holds an upstream key on a non-loopback address.
    access_keys: tuple[str, ...] = field(default=(), repr=False)
    allow_open: bool = False
    # Key of the reasoning sealed into Responses clients' encrypted_content; replicas that
    # share conversations need the same one. "" at start-up means a random one per process.
    secret: str = field(default="", repr=False)
    # Outbound proxy for the upstream, resolved once (flag, or *_PROXY minus NO_PROXY).
    outbound_proxy: str = field(default="", repr=False)
    log_format: str = "text"          # text | json
    # Upstreams from a config file, in the order requests try them. Empty: the one upstream
    # the fields above describe (upstream, upstream_format, api_key, outbound_proxy,
    # upstream_connections), as before config files existed.
    upstreams: tuple[UpstreamConfig, ...] = ()
    config_path: str = ""             # the config file read, "" for none (reloads read it again)
    # The circuit breaker: this many failures in a row take an upstream out of rotation
    # for breaker_cooldown seconds, then one request probes it.
    breaker_failures: int = 3
    breaker_cooldown: float = 30.0

    def upstream_list(self) -> tuple[UpstreamConfig, ...]:
        if self.upstreams:
            return self.upstreams
        return (UpstreamConfig(name="default", base_url=self.upstream, format=self.upstream_format,
                               api_key=self.api_key, outbound_proxy=self.outbound_proxy,
                               connections=self.upstream_connections),)

    def is_kimi(self, model: str) -> bool:
        name = model.lower()
        return any(fnmatch.fnmatchcase(name, p.lower()) for p in self.kimi_models)


def infer_format(base_url: str) -> UpstreamFormat:
    """A base whose path ends in /v1 is OpenAI-format (api.moonshot.ai/v1); else Anthropic."""
    path = urlsplit(base_url).path.rstrip("/")
    return "openai" if path.endswith("/v1") else "anthropic"


def upstream_url(base: str, fmt: UpstreamFormat) -> str:
    """Each ecosystem's convention: Anthropic bases get /v1/messages, OpenAI bases /chat/completions."""
    base = base.rstrip("/")
    if fmt == "anthropic":
        return f"{base}/v1/messages"
    return f"{base}/chat/completions"
