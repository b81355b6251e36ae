"""`python -m rawproxy.simulator --host 127.0.0.1 --port P`: serve the Kimi simulator."""

from __future__ import annotations

import argparse
from functools import partial

import trio

from .app import SimulatorApp


async def _main(host: str, port: int, app: SimulatorApp) -> None:
    from ..server import serve  # imported late: the server module is shared with the proxy

    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve, app, host, port))
        print(f"kimi simulator listening on http://{host}:{bound or port}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rawproxy.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--api-key", default=None, help="accept only this key (default: any non-empty key)")
    parser.add_argument("--event-delay", type=float, default=0.0, help="seconds between streamed events")
    args = parser.parse_args(argv)
    app = SimulatorApp(api_key=args.api_key, event_delay=args.event_delay)
    try:
        trio.run(_main, args.host, args.port, app)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
