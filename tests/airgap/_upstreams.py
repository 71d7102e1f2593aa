"""``python -m tests.airgap._upstreams PORT...``: recording upstreams on 127.0.0.1 (plain HTTP),
one per port, for a gateway inside a network namespace. Prints ``ready`` once all listen; stops
on SIGTERM, or by itself after 15 minutes."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import threading
import time

import uvicorn

from tests.fixtures.upstream import RecordingUpstream, _Quiet


def _serve(port: int) -> _Quiet:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    config = uvicorn.Config(
        RecordingUpstream().app(), lifespan="off", access_log=False, log_config=None
    )
    server = _Quiet(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    return server


def main(ports: list[int]) -> int:
    servers = [_serve(port) for port in ports]
    print("ready", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait(900)
    for server in servers:
        server.should_exit = True
    return 0


if __name__ == "__main__":
    sys.exit(main([int(p) for p in sys.argv[1:]]))
