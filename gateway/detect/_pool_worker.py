"""The detection pool's worker side: the loop a worker process runs, its pipe messages, and
starting one (blocking: the pool calls it at start-up or from a thread). See
:mod:`gateway.detect.pool` for the design and the bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
from multiprocessing.connection import Connection
from typing import Any

from gateway.detect.errors import DetectError, SpecError
from gateway.detect.findings import TextRef
from gateway.detect.spec import DetectionSpec

__all__ = ["START_TIMEOUT_S", "Worker", "dumps", "loads", "start_worker"]

logger = logging.getLogger("bastion.detect.pool")

# A worker's start (fork from the server, one warm-up analysis) may take this long before the
# pool gives up on it, logs and tries again: a cold disk and a busy machine take seconds.
START_TIMEOUT_S = 120.0
_WARM_UP = (TextRef("warmup", "Warm up the analyzer, please: Maria Lopez called."),)

# -- the worker process ---------------------------------------------------------------------


def dumps(message: object) -> bytes:
    # Plain pickle of our own frozen dataclasses, between the gateway and its own workers over a
    # private pipe: cheaper per message than Connection.send's ForkingPickler.
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Any:
    return pickle.loads(data)  # noqa: S301 - only ever bytes our own process pair wrote


def worker_main(conn: Connection) -> None:
    """Loop in the worker process: (version, spec or None, texts) in, findings or error out.

    ``spec`` comes along only when the dispatcher last saw another version here; the Detector
    for it is built once and kept until the next version arrives.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway handles Ctrl-C and stops us
    from gateway.detect.detector import Detector

    version: str | None = None
    detector: Detector | None = None
    while True:
        try:
            message = loads(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the gateway closed the pipe or died
        if message is None:
            return
        new_version, spec, texts = message
        reply: tuple[Any, ...]
        try:
            if spec is not None:
                detector, version = None, None
                detector, version = Detector(spec), new_version
            if detector is None or version != new_version:
                raise SpecError("the detection worker has no detector for this policy version")
            reply = (True, detector.analyze(texts))
        except DetectError as exc:
            reply = (False, type(exc).__name__, exc.message)
        except Exception as exc:  # noqa: BLE001 - reported by class: the request fails closed
            reply = (False, type(exc).__name__, None)
        try:
            conn.send_bytes(dumps(reply))
        except (OSError, ValueError):
            return


# -- one worker process -------------------------------------------------------------------


class Worker:
    """A worker process, the gateway's end of its pipe, and the job it is running."""

    def __init__(self, index: int, process: Any, conn: Connection, version: str | None) -> None:
        self.index = index
        self.process = process
        self.conn = conn
        self.version = version  # the policy version it holds a Detector for
        self.job: Any = None  # the pool's job it is running (gateway.detect.pool._Job)
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # where its reader is registered

    def kill(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self.conn.fileno())
        self.loop = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.conn.close()
        self.process.kill()
        self.process.join(5)

    def stop(self) -> None:
        """Ask an idle worker to exit; kill it if it does not within 2 s."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self.conn.fileno())
        self.loop = None
        with contextlib.suppress(OSError, ValueError):  # already gone: nothing to ask
            self.conn.send_bytes(dumps(None))
        self.process.join(2)
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def start_worker(ctx: Any, index: int, version: str, spec: DetectionSpec) -> Worker | None:
    """Start a worker and warm it up with ``spec`` (blocking: a thread or start-up only)."""
    parent, child = ctx.Pipe(duplex=True)
    process = ctx.Process(
        target=worker_main, args=(child,), name=f"bastion-detect-{index}", daemon=True
    )
    try:
        process.start()
    except Exception as exc:  # noqa: BLE001 - logged; retried after a pause; requests wait or 503
        # OSError (no memory, no pids) or RuntimeError (a script that starts a pool without
        # the ``if __name__ == "__main__":`` guard that multiprocessing needs).
        logger.error("detection worker %d did not start (%s)", index, type(exc).__name__)
        parent.close()
        return None
    finally:
        child.close()
    worker = Worker(index, process, parent, None)
    # Warm with the policy's spec; if that spec cannot be built, warm with the default one (the
    # worker is sound, the policy is not: its requests fail closed naming the error, and the
    # worker is not restarted over and over).
    for warm_version, warm_spec in ((version, spec), (None, DetectionSpec())):
        try:
            parent.send_bytes(dumps((warm_version, warm_spec, _WARM_UP)))
            if not parent.poll(START_TIMEOUT_S):
                raise TimeoutError
            reply = loads(parent.recv_bytes())
        except (OSError, EOFError, TimeoutError) as exc:
            logger.error("detection worker %d did not warm up (%s)", index, type(exc).__name__)
            worker.kill()
            return None
        if reply[0]:
            worker.version = warm_version
            return worker
        logger.error("detection worker %d cannot build the policy's detector (%s)", index, reply[1])
    worker.kill()
    return None
