"""Upstream IO: the only code that opens sockets to an upstream.

`client` sends a request (with retries before the first byte) and maps transport failures
to `UpstreamError`; `pool` keeps the keep-alive connections; `retry` is the pure retry
policy; `outbound` picks the outbound proxy (NO_PROXY included). May import
`rawproxy.core` only.
"""

from .client import Upstream, UpstreamResponse
from .outbound import make_proxy, resolve_outbound_proxy
from .retry import RetryPolicy

__all__ = ["RetryPolicy", "Upstream", "UpstreamResponse", "make_proxy", "resolve_outbound_proxy"]
