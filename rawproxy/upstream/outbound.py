"""The outbound proxy between rawproxy and its upstream: which one (flag, or the
environment's *_PROXY minus NO_PROXY, decided once at start-up) and its httpcore form."""

from __future__ import annotations

import importlib.util
import ipaddress
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

import httpcore

from ..core.settings import ConfigError
from ..core.urls import is_loopback


def make_proxy(url: str) -> httpcore.Proxy:
    """An httpcore proxy from `http://[user:pass@]host:port` (or https, socks5, socks5h)."""
    parts = urlsplit(url)
    auth = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default_port = {"http": 80, "https": 443}.get(parts.scheme, 1080)
    return httpcore.Proxy(f"{parts.scheme}://{host}:{parts.port or default_port}", auth=auth)


def _no_proxy_matches(host: str, port: int, no_proxy: str) -> bool:
    """curl's NO_PROXY: `*`, host names matching themselves and their subdomains
    (`example.com`, `.example.com`, `*.example.com`), IP addresses and CIDR blocks, each
    optionally with `:port`."""
    host = host.lower().strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in no_proxy.split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        name, entry_port = entry, None
        if entry.startswith("["):  # [v6]:port
            name, _, rest = entry[1:].partition("]")
            entry_port = rest[1:] if rest.startswith(":") else None
        elif entry.count(":") == 1:
            name, _, entry_port = entry.partition(":")
        if entry_port and entry_port != str(port):
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        name = name.removeprefix("*").lstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def resolve_outbound_proxy(flag: str | None, upstream: str, env: Mapping[str, str]) -> str:
    """The proxy URL for requests to `upstream`, or "". The flag wins over the environment;
    NO_PROXY exempts the upstream from either (as curl does with its environment). A
    loopback upstream ignores the environment's proxies (as Go's ProxyFromEnvironment does):
    a proxy elsewhere cannot reach this machine's localhost; only the flag sends it there."""
    parts = urlsplit(upstream)
    if flag is None:
        if is_loopback(parts.hostname or ""):
            return ""
        names = ("https_proxy", "HTTPS_PROXY") if parts.scheme == "https" else ("http_proxy", "HTTP_PROXY")
        flag = next((env[n] for n in names if env.get(n)), "")
    url = flag.strip()
    if not url:
        return ""
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if no_proxy and _no_proxy_matches(parts.hostname or "", port, no_proxy):
        return ""
    if "://" not in url:
        url = "http://" + url  # HTTP_PROXY=host:port is common
    proxy = urlsplit(url)
    if proxy.scheme not in ("http", "https", "socks5", "socks5h") or not proxy.hostname:
        raise ConfigError(f"outbound proxy must be http://, https:// or socks5://host:port, not {proxy.scheme}://...")
    try:
        _ = proxy.port  # urlsplit checks the port only when asked
    except ValueError:
        raise ConfigError("outbound proxy has an invalid port") from None
    if proxy.scheme.startswith("socks") and importlib.util.find_spec("socksio") is None:
        raise ConfigError("a socks5 outbound proxy needs the socksio package (pip install socksio)")
    return url
