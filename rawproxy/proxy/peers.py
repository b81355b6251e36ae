"""Under --workers, one scrape of /metrics answers for every worker, not for whichever
one the kernel handed the connection.

Each worker listens on a Unix socket, `worker-<id>.sock`, in a folder the supervisor
made for its run (mode 0700: only the proxy's own user reaches it, so the access keys
that guard /metrics are not bypassed). The worker serving a scrape connects to every
other socket there; each peer writes its metrics snapshot (JSON) and closes; the scrape
renders the totals (`Metrics.render(peers)`).

Nothing is shared or written per request, so recording costs what it did: the whole
price is paid at scrape time, one local connection per peer. A peer that does not answer
within `PEER_TIMEOUT` (it is restarting, or its loop is stuck) is left out of that
scrape; its `rawproxy_info` line is missing, which tells the scrape was partial.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable

import trio

log = logging.getLogger("rawproxy")

PEER_TIMEOUT = 1.0                  # seconds a scrape waits for one peer
MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024  # far above a real snapshot (kilobytes): a bound, not a size


def socket_path(folder: str, worker: str) -> str:
    return os.path.join(folder, f"worker-{worker}.sock")


class WorkerPeers:
    def __init__(self, folder: str, worker: str, snapshot: Callable[[], dict]) -> None:
        self.folder = folder
        self.path = socket_path(folder, worker)
        self._snapshot = snapshot

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answers peers' scrapes until cancelled: `await nursery.start(peers.serve)`."""
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.unlink(self.path)  # left by this worker's previous life (it was killed)
        except FileNotFoundError:
            pass
        try:
            await sock.bind(self.path)
            sock.listen(64)
        except OSError as exc:  # e.g. a path past the 107 bytes a Unix socket allows
            log.warning("worker metrics are not shared (%s: %s): a scrape shows one worker's", self.path, exc)
            sock.close()
            task_status.started()
            return
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._answer, [trio.SocketListener(sock)])
                task_status.started()
        finally:
            try:
                os.unlink(self.path)
            except OSError:
                pass

    async def _answer(self, stream: trio.SocketStream) -> None:
        try:
            data = json.dumps(self._snapshot(), separators=(",", ":")).encode()
            with trio.move_on_after(PEER_TIMEOUT):
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the asking worker gave up: nothing to tell
        except Exception:
            log.exception("answering a peer's metrics scrape failed")  # a bug; never the worker's end
        finally:
            await trio.aclose_forcefully(stream)

    async def gather(self) -> list[dict]:
        """The snapshots of every other worker that answers in time."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        paths = sorted(os.path.join(self.folder, n) for n in names if n.startswith("worker-") and n.endswith(".sock"))
        found: list[dict] = []
        async with trio.open_nursery() as nursery:
            for path in paths:
                if path != self.path:
                    nursery.start_soon(self._ask, path, found)
        return found

    async def _ask(self, path: str, found: list[dict]) -> None:
        with trio.move_on_after(PEER_TIMEOUT):
            try:
                stream = await trio.open_unix_socket(path)
            except OSError:
                return  # a worker that is gone (its socket file stays until it is replaced)
            async with stream:
                chunks: list[bytes] = []
                size = 0
                try:
                    while size <= MAX_SNAPSHOT_BYTES:  # past the bound: the else, no answer taken
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            break
                        chunks.append(chunk)
                        size += len(chunk)
                    else:
                        return
                    doc = json.loads(b"".join(chunks))
                except (trio.BrokenResourceError, OSError, ValueError):
                    return
                if isinstance(doc, dict):
                    found.append(doc)
