"""The proxy itself: routes, access keys and the access log (`app`), one completion from
the client's body to its answer (`pipeline`), the stream relay (`relay`), which headers
cross (`headers`), reading client requests (`requests`), the model list (`models`), the
live page and its figures (`dashboard`).

May import `rawproxy.core`, `translate`, `kimi`, `server` (its types), `upstream` and
`store`; never `service`.
"""

from .app import ProxyApp

__all__ = ["ProxyApp"]
