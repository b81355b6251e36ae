"""Client IO: the only code that touches client sockets (trio + h11).

`listener` accepts, bounds and drains connections; `connection` runs one client's
HTTP/1.1 exchange; `http` holds the types at the edge (Request, Response, the app
signature, the limits); `budget` bounds the memory held for request bodies. It serves
any app (the proxy and the Kimi simulator alike) and imports nothing else of rawproxy.
"""

from .http import Admit, App, Request, RequestHead, Response, ServerLimits, StreamAborted, json_response
from .listener import Server, serve

__all__ = ["Admit", "App", "Request", "RequestHead", "Response", "Server", "ServerLimits", "StreamAborted",
           "json_response", "serve"]
