"""The config file: TOML -> checked values, ready for the command line's resolution.

Pure apart from reading the one file: every key is checked for its name, its type and
(for URLs and numbers) its value, and a failure names the file, the key and what was
expected, never the value of a secret. The values come back under the names of the
flags they stand for (`FileConfig.values`), in the forms `cli.load_settings` already
takes from the environment, so a flag or an environment variable still beats the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..core.settings import ConfigError

# What each top-level key holds. Kinds: str, url, bool, port, int (> 0), count (>= 0),
# seconds (> 0), list (a string "a,b" or a list of strings), map (a string
# "glob=target,..." or a table of glob = target), format.
TOP_LEVEL: dict[str, str] = {
    "host": "str", "port": "port", "upstream": "url", "upstream_format": "format", "api_key": "secret",
    "model_map": "map", "kimi_models": "list", "debug": "bool",
    "max_body_bytes": "int", "max_event_bytes": "int", "max_header_bytes": "int",
    "max_inflight_body_bytes": "int", "read_timeout": "seconds", "connect_timeout": "seconds",
    "header_timeout": "seconds", "body_timeout": "seconds", "keepalive_timeout": "seconds",
    "request_timeout": "seconds", "graceful_timeout": "seconds", "workers": "int", "store": "secret",
    "store_ttl": "seconds", "upstream_connections": "int", "max_connections": "int", "retries": "count",
    "retry_max_wait": "seconds", "secret": "secret", "proxy_api_keys": "secret_list", "allow_open": "bool",
    "outbound_proxy": "proxy", "log_format": "log_format", "breaker_failures": "int",
    "breaker_cooldown": "seconds",
}
UPSTREAM_KEYS: dict[str, str] = {
    "name": "str", "base_url": "url", "format": "format", "api_key": "secret", "key_env": "str",
    "models": "models", "kimi": "bool", "outbound_proxy": "proxy", "connections": "int",
}
_EXPECTED = {
    "str": "a string", "secret": "a string", "url": "an http:// or https:// URL", "bool": "true or false",
    "port": "a whole number from 0 to 65535", "int": "a whole number above 0",
    "count": "a whole number, 0 or more", "seconds": "a number of seconds above 0",
    "list": "a list of strings (or one comma-separated string)",
    "secret_list": "a list of strings (or one comma-separated string)",
    "map": 'a table of glob = "target" (or one "glob=target,..." string)',
    "format": '"anthropic" or "openai"', "log_format": '"text" or "json"',
    "proxy": "an http://, https:// or socks5:// URL",
    "models": 'a list of model globs, each optionally "glob=rename"',
}


class ConfigFileError(ConfigError):
    def __init__(self, path: str, key: str, expected: str, got: str = "") -> None:
        self.path, self.key = path, key
        super().__init__(f"config file {path}: {key}: expected {expected}" + (f", got {got}" if got else ""))


@dataclass(frozen=True, slots=True)
class FileConfig:
    path: str
    values: dict[str, Any] = field(default_factory=dict)
    # Each upstream's keys, checked: name, base_url, format (None: inferred), api_key
    # (resolved from key_env), models ((glob, rename), ...), kimi, outbound_proxy, connections.
    upstreams: tuple[dict[str, Any], ...] = ()


def default_path(env: Mapping[str, str]) -> str | None:
    """$XDG_CONFIG_HOME/rawproxy/config.toml (or ~/.config/...) when that file exists."""
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
    path = os.path.join(base, "rawproxy", "config.toml")
    return path if os.path.isfile(path) else None


def load(path: str, env: Mapping[str, str]) -> FileConfig:
    """Read and check one config file; raises ConfigFileError naming what is wrong."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return parse(doc, path, env)


def parse(doc: Mapping[str, Any], path: str, env: Mapping[str, str]) -> FileConfig:
    values: dict[str, Any] = {}
    upstreams: list[dict[str, Any]] = []
    for key, raw in doc.items():
        if key == "upstreams":
            if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
                raise ConfigFileError(path, key, "[[upstreams]] tables", _type_name(raw))
            upstreams = [_upstream(item, f"upstreams[{i}]", path, env) for i, item in enumerate(raw)]
            continue
        kind = TOP_LEVEL.get(key)
        if kind is None:
            raise ConfigFileError(path, key, "a known setting (unknown key)")
        values[key] = _value(raw, kind, key, path)
    names = [u["name"] for u in upstreams]
    for name in names:
        if names.count(name) > 1:
            raise ConfigFileError(path, "upstreams", "a different name for each upstream", f"{name!r} twice")
    return FileConfig(path, values, tuple(upstreams))


def _upstream(item: Mapping[str, Any], where: str, path: str, env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"format": None, "api_key": "", "models": (("*", ""),), "kimi": None,
                           "outbound_proxy": None, "connections": None}
    for key, raw in item.items():
        kind = UPSTREAM_KEYS.get(key)
        if kind is None:
            raise ConfigFileError(path, f"{where}.{key}", "a known upstream setting (unknown key)")
        out[key] = _value(raw, kind, f"{where}.{key}", path)
    for required in ("name", "base_url"):
        if required not in out:
            raise ConfigFileError(path, f"{where}.{required}", _EXPECTED[UPSTREAM_KEYS[required]], "nothing")
    out["base_url"] = out["base_url"].rstrip("/")
    if "key_env" in out:
        if item.get("api_key"):
            raise ConfigFileError(path, f"{where}.key_env", "either api_key or key_env, not both")
        name = out.pop("key_env")
        if not env.get(name):
            raise ConfigFileError(path, f"{where}.key_env", f"the environment variable {name} to hold a key",
                                  "it is not set")
        out["api_key"] = env[name]
    return out


def _value(raw: Any, kind: str, key: str, path: str) -> Any:
    def refuse() -> ConfigFileError:
        # A secret's value is never repeated back, only its type.
        shown = _type_name(raw) if kind.startswith("secret") or not isinstance(raw, (str, int, float)) else repr(raw)
        return ConfigFileError(path, key, _EXPECTED[kind], shown)

    if kind in ("str", "secret"):
        if not isinstance(raw, str):
            raise refuse()
        return raw
    if kind == "bool":
        if not isinstance(raw, bool):
            raise refuse()
        return raw
    if kind in ("port", "int", "count"):
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise refuse()
        low, high = {"port": (0, 65535), "int": (1, None), "count": (0, None)}[kind]
        if raw < low or (high is not None and raw > high):
            raise refuse()
        return raw
    if kind == "seconds":
        if not isinstance(raw, (int, float)) or isinstance(raw, bool) or not raw > 0:
            raise refuse()
        return float(raw)
    if kind in ("url", "proxy"):
        if not isinstance(raw, str):
            raise refuse()
        parts = urlsplit(raw if kind == "url" or "://" in raw else "http://" + raw)
        schemes = ("http", "https") if kind == "url" else ("http", "https", "socks5", "socks5h")
        try:
            _ = parts.port
        except ValueError:
            raise ConfigFileError(path, key, _EXPECTED[kind], "a URL with an invalid port") from None
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigFileError(path, key, _EXPECTED[kind], "something else")  # URLs may hold credentials
        return raw
    if kind in ("format", "log_format"):
        allowed = ("anthropic", "openai") if kind == "format" else ("text", "json")
        if raw not in allowed:
            raise refuse()
        return raw
    if kind in ("list", "secret_list"):
        if isinstance(raw, str):
            return raw
        if not isinstance(raw, list) or not all(isinstance(item, str) and "," not in item for item in raw):
            raise refuse()
        return ",".join(raw)
    if kind == "map":
        if isinstance(raw, str):
            return raw
        if not isinstance(raw, dict) or not all(isinstance(v, str) and v for v in raw.values()):
            raise refuse()
        return ",".join(f"{glob}={target}" for glob, target in raw.items())
    if kind == "models":
        if not isinstance(raw, list) or not raw or not all(isinstance(item, str) and item.strip() for item in raw):
            raise refuse()
        pairs = []
        for item in raw:
            glob, _, rename = item.partition("=")
            if not glob.strip():
                raise refuse()
            pairs.append((glob.strip(), rename.strip()))
        return tuple(pairs)
    raise AssertionError(kind)


def _type_name(value: object) -> str:
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
