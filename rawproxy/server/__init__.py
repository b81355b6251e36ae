"""Client IO: the only code that touches client sockets (trio + h11).

`listener` accepts, bounds and drains connections; `connection` runs one client's
HTTP/1.1 exchange; `http` holds the types at the edge (Request, Response, the app
signature, the limits). It serves any app (the proxy and the Kimi simulator alike) and
imports nothing else of rawproxy.
"""

from .http import App, Request, Response, ServerLimits, StreamAborted, json_response
from .listener import Server, serve

__all__ = ["App", "Request", "Response", "Server", "ServerLimits", "StreamAborted", "json_response", "serve"]
