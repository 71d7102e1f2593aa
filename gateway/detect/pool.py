"""Detection in a bounded pool of worker processes, with a fair share per identity.

Why processes: detection is mostly pure Python (regex recognizers, normalization, spaCy's
Python parts), and the GIL makes a thread pool one core wide for it. Each worker process builds
its own :class:`~gateway.detect.Detector` from the policy's :class:`DetectionSpec`, once per
policy version, and loads spaCy once (at start-up, so the first request does not wait for it).
Workers come from the ``forkserver`` start method, never ``fork``: the gateway has threads.

Per request, :meth:`DetectionPool.analyze` queues a job under the caller's identity; idle
workers take jobs **round-robin over identities** (a caller with many queued jobs gets one turn
like everyone else). Dispatch runs in the event loop (a pipe per worker, read when readable): no
thread hand-off per request, so the gateway's own CPU per detection stays small.

Bounds (``limits:`` in the gateway config, see :class:`gateway.config.LimitsConfig`):

- ``detect_processes``: worker processes (default: one per CPU core the gateway may run on).
- ``max_concurrent_detections``: jobs queued or running, all identities together; beyond it a
  request is refused at once (503 ``detector_busy``) instead of queueing without bound.
- ``detect_identity_max_chars``: text characters one identity may have queued or running;
  beyond it that identity's requests are refused (503 ``detector_busy``) while others go on.
  A request is always admitted when its identity has nothing in flight, so the limit never
  refuses a request that the size limits allow.
- ``detect_timeout_s``: from submission to answer. A worker that has not answered by then is
  killed and replaced (a pathological regex cannot hold a core), and the request gets 503.

Fail closed: a worker that dies, or answers an error, fails that request
(:class:`WorkerFailed`, a :class:`~gateway.detect.DetectError`, so the router applies the
policy's ``on_error``); the worker is replaced before its dispatcher takes the next job. No text
crosses back in an error: a worker reports only the exception's class (and the message of
detection's own errors, which never carry text).

Exceptions (in detection's tree, see :mod:`gateway.detect.errors`)::

    ServiceUnavailable (gateway.errors, 503)
     └── DetectorBusy       queue full, identity share spent, deadline passed, shutting down
    DetectError (gateway.detect.errors)
     └── WorkerFailed       the worker died or failed: the request fails closed
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.detect._pool_worker import START_TIMEOUT_S, Worker, dumps, loads, start_worker
from gateway.detect.errors import (
    AnalysisError,
    DetectError,
    DetectorInitError,
    SpecError,
    TextPathError,
)
from gateway.detect.findings import Finding, TextRef
from gateway.detect.spec import DetectionSpec
from gateway.errors import ServiceUnavailable

__all__ = ["DetectionPool", "DetectorBusy", "WorkerFailed", "default_processes"]

logger = logging.getLogger("bastion.detect.pool")

# Pause between failed worker starts, so a worker that cannot start does not spin a core.
RESTART_BACKOFF_S = 1.0
# Detection's own errors are re-raised as themselves in the gateway (their messages carry no
# text by contract); anything else a worker raises becomes WorkerFailed, class name only.
_REMOTE_ERRORS: dict[str, type[DetectError]] = {
    cls.__name__: cls
    for cls in (AnalysisError, DetectError, DetectorInitError, SpecError, TextPathError)
}


class DetectorBusy(ServiceUnavailable):
    """Detection cannot take or finish this request now (503, ``detector_busy``, Retry-After)."""

    code = "detector_busy"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, retry_after=1.0)
        self.reason = reason  # queue_full, identity_share, timeout, closed: a metric label


class WorkerFailed(DetectError):
    """A detection worker died or failed on this request: the request fails closed."""


def default_processes() -> int:
    """One worker per CPU core this process may run on (cgroup/affinity aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# -- the queue ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    identity: str
    version: str
    spec: DetectionSpec
    texts: tuple[TextRef, ...] = field(repr=False)
    chars: int
    deadline: float  # loop.time()
    future: asyncio.Future[list[Finding]]
    queued: bool = True


class _FairQueue:
    """Jobs per identity, taken round-robin; admission by the global and per-identity bounds.

    Used from the event loop thread only (no lock): dispatch happens in the loop.
    """

    def __init__(self, *, max_jobs: int, identity_max_chars: int) -> None:
        self._max_jobs = max_jobs
        self._identity_max_chars = identity_max_chars
        self._queues: dict[str, deque[_Job]] = {}  # insertion order is the round-robin order
        self._chars: dict[str, int] = {}  # queued + running, per identity
        self.jobs = 0  # queued + running
        self.closed = False

    def submit(self, job: _Job) -> None:
        if self.closed:
            raise DetectorBusy("the gateway is shutting down", reason="closed")
        if self.jobs >= self._max_jobs:
            raise DetectorBusy(
                f"detection has {self.jobs} requests queued or running, the limit "
                "(limits.max_concurrent_detections); retry later",
                reason="queue_full",
            )
        held = self._chars.get(job.identity, 0)
        if held and held + job.chars > self._identity_max_chars:
            raise DetectorBusy(
                f"this identity has {held} characters in detection; with this request it would "
                f"pass its share of {self._identity_max_chars} "
                "(limits.detect_identity_max_chars); retry later",
                reason="identity_share",
            )
        self._chars[job.identity] = held + job.chars
        self.jobs += 1
        self._queues.setdefault(job.identity, deque()).append(job)

    def take(self) -> _Job | None:
        """The next job, round-robin over identities; None when nothing is queued."""
        while self._queues:
            identity = next(iter(self._queues))
            queue = self._queues.pop(identity)
            job = queue.popleft()
            if queue:
                self._queues[identity] = queue  # back of the line
            job.queued = False
            if not job.future.done():
                return job
            self.release(job)  # its caller gave up while it was queued
        return None

    def withdraw(self, job: _Job) -> None:
        """Drop a job that is still queued (its caller gave up); a running one finishes."""
        if not job.queued:
            return
        queue = self._queues.get(job.identity)
        if queue is not None and job in queue:
            queue.remove(job)
            if not queue:
                del self._queues[job.identity]
        job.queued = False
        self.release(job)

    def release(self, job: _Job) -> None:
        left = self._chars.get(job.identity, 0) - job.chars
        if left > 0:
            self._chars[job.identity] = left
        else:
            self._chars.pop(job.identity, None)
        self.jobs -= 1

    def close(self) -> list[_Job]:
        """Stop admitting jobs; return the ones still queued (their callers get DetectorBusy)."""
        self.closed = True
        left = [job for queue in self._queues.values() for job in queue]
        self._queues.clear()
        for job in left:
            job.queued = False
            self.release(job)
        return left


# -- the pool -------------------------------------------------------------------------------


class DetectionPool:
    """``processes`` detection workers behind a fair, bounded queue (see the module docstring).

    Dispatch runs in the event loop: a job is written to an idle worker's pipe, the answer is
    read when the pipe turns readable (``loop.add_reader``), and a timer at the job's deadline
    kills a worker that has not answered. Only starting a worker blocks, and that runs at
    start-up or in a thread. ``on_refused(reason)`` and ``on_restart(reason)`` feed metrics
    (reasons only, never identities or text).
    """

    def __init__(
        self,
        *,
        processes: int,
        timeout_s: float,
        max_jobs: int,
        identity_max_chars: int,
        on_refused: Callable[[str], None] | None = None,
        on_restart: Callable[[str], None] | None = None,
        start_method: str = "forkserver",
    ) -> None:
        if processes < 1:
            raise ValueError(f"a detection pool needs at least one process, not {processes}")
        self.processes = processes
        self.timeout_s = timeout_s
        self.queue = _FairQueue(max_jobs=max_jobs, identity_max_chars=identity_max_chars)
        self._ctx: Any = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # The fork server loads the spaCy model once; workers fork from it ready.
            self._ctx.set_forkserver_preload(["gateway.detect._forkserver_preload"])
        self._on_refused = on_refused
        self._on_restart = on_restart
        self._latest: tuple[str, DetectionSpec] = ("", DetectionSpec())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[Worker] = []
        self._busy: set[Worker] = set()
        # Workers started by a thread, waiting to be adopted by the loop.
        self._incoming: list[Worker] = []
        self._incoming_lock = threading.Lock()
        self._starting = 0  # worker starts in progress (threads)
        self._started = processes  # worker numbers for process names
        self._closed = False

    # lifecycle ------------------------------------------------------------------------------
    def start(self, version: str | None = None, spec: DetectionSpec | None = None) -> None:
        """Start every worker, each warmed with ``spec`` (default: the default spec), and wait
        for them (blocking: call at start-up, before serving). A worker that fails to start is
        logged and retried in the background; requests wait for it or get 503."""
        if spec is not None and version is not None:
            self._latest = (version, spec)
        version, spec = self._latest
        processes = []
        for index in range(self.processes):
            # Started in parallel: each loads spaCy in its own process.
            thread = threading.Thread(
                target=self._start_into_incoming, args=(index, False), daemon=True
            )
            thread.start()
            processes.append(thread)
        for thread in processes:
            thread.join(START_TIMEOUT_S + 10)

    def close(self) -> None:
        """Refuse new work, fail what is queued and running, stop the workers."""
        self._closed = True
        for job in self.queue.close():
            if not job.future.done():
                job.future.set_exception(
                    DetectorBusy("the gateway is shutting down", reason="closed")
                )
        for worker in list(self._busy):
            running = worker.job
            worker.kill()
            if running is not None and not running.future.done():
                running.future.set_exception(
                    DetectorBusy("the gateway is shutting down", reason="closed")
                )
        self._busy.clear()
        with self._incoming_lock:
            idle, self._incoming = [*self._idle, *self._incoming], []
        self._idle = []
        for worker in idle:
            worker.stop()

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until ``processes`` workers are up and warm (True) or ``timeout_s`` passed.
        For start-up checks and tests; never call it from the event loop thread."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._incoming_lock:
                if (
                    self._starting == 0
                    and len(self._idle) + len(self._busy) + len(self._incoming) >= self.processes
                ):
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    # requests -------------------------------------------------------------------------------
    async def analyze(
        self, identity: str, version: str, spec: DetectionSpec, texts: Sequence[TextRef]
    ) -> list[Finding]:
        """Findings for ``texts`` as ``Detector(spec).analyze`` gives them, computed in a worker.

        Raises :class:`DetectorBusy` (503) when refused or late, :class:`WorkerFailed` (or
        detection's own error) when the worker failed: either way nothing may go to a managed
        route on this request's behalf.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        self._adopt()
        if self._latest[0] != version:
            self._latest = (version, spec)
        job = _Job(
            identity=identity,
            version=version,
            spec=spec,
            texts=tuple(texts),
            chars=sum(len(t.text) for t in texts),
            deadline=loop.time() + self.timeout_s,
            future=loop.create_future(),
        )
        # A job may fail after its caller left (deadline, shutdown): never an unread exception.
        job.future.add_done_callback(_consume)
        try:
            self.queue.submit(job)
        except DetectorBusy as exc:
            self._refused(exc.reason)
            raise
        self._pump()
        try:
            async with asyncio.timeout_at(job.deadline):
                return await asyncio.shield(job.future)
        except TimeoutError:
            self._refused("timeout")
            raise self.timeout_error() from None
        finally:
            if job.queued:
                self.queue.withdraw(job)
                if not job.future.done():
                    job.future.cancel()

    def timeout_error(self) -> DetectorBusy:
        return DetectorBusy(
            f"detection did not finish within {self.timeout_s} s (limits.detect_timeout_s); "
            "retry later",
            reason="timeout",
        )

    # introspection (metrics, tests) -----------------------------------------------------------
    def depth(self) -> int:
        """Jobs queued or running."""
        return self.queue.jobs

    def worker_pids(self) -> list[int]:
        """Pids of the live workers (idle, busy or waiting to be adopted)."""
        with self._incoming_lock:
            workers = [*self._idle, *self._busy, *self._incoming]
        return sorted(w.process.pid for w in workers if w.process.is_alive())

    # dispatch (event loop thread) -------------------------------------------------------------
    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve from ``loop``. A gateway has one loop; tests run several in turn, so a new one
        takes the idle workers over and busy ones (whose callers' loop is gone) are replaced."""
        old: asyncio.AbstractEventLoop | None = self._loop
        self._loop = loop
        for worker in list(self._busy):
            self._busy.discard(worker)
            if worker.job is not None:
                self.queue.release(worker.job)
                worker.job = None
            worker.kill()
            self._replace("loop_changed")
        for worker in self._idle:
            if old is not None and not old.is_closed() and worker.loop is old:
                old.remove_reader(worker.conn.fileno())
            worker.loop = None
            self._watch(worker)

    def _adopt(self) -> None:
        with self._incoming_lock:
            incoming, self._incoming = self._incoming, []
        for worker in incoming:
            if self._closed:
                worker.stop()
                continue
            self._watch(worker)
            self._idle.append(worker)

    def _watch(self, worker: Worker) -> None:
        loop = self._loop
        if loop is None or worker.loop is loop:
            return
        loop.add_reader(worker.conn.fileno(), self._readable, worker)
        worker.loop = loop

    def _pump(self) -> None:
        """Give queued jobs to idle workers, round-robin over identities."""
        loop = self._loop
        if loop is None:
            return
        while self._idle:
            job = self.queue.take()
            if job is None:
                return
            worker = self._idle.pop()
            spec = None if worker.version == job.version else job.spec
            try:
                worker.conn.send_bytes(dumps((job.version, spec, job.texts)))
            except (OSError, ValueError):
                self._failed(worker, job, "crashed")
                continue
            worker.version = job.version
            worker.job = job
            self._busy.add(worker)
            worker.timer = loop.call_at(job.deadline, self._expired, worker)

    def _readable(self, worker: Worker) -> None:
        job = worker.job
        try:
            reply = loads(worker.conn.recv_bytes())
        except (OSError, EOFError):
            self._busy.discard(worker)
            if worker in self._idle:
                self._idle.remove(worker)
            self._failed(worker, job, "crashed")
            self._pump()
            return
        if worker.timer is not None:
            worker.timer.cancel()
            worker.timer = None
        worker.job = None
        self._busy.discard(worker)
        self._idle.append(worker)
        if job is not None:
            self.queue.release(job)
            if not job.future.done():
                if reply[0]:
                    job.future.set_result(reply[1])
                else:
                    worker.version = None  # a failed build leaves no detector: send it again
                    job.future.set_exception(_remote_error(reply[1], reply[2]))
        self._pump()

    def _expired(self, worker: Worker) -> None:
        """A job's deadline passed in its worker: kill the worker (it may be stuck in a
        pathological regex), fail the job, start a replacement."""
        job = worker.job
        worker.timer = None
        self._busy.discard(worker)
        worker.kill()
        self._replace("timeout")
        if job is not None:
            self.queue.release(job)
            if not job.future.done():
                job.future.set_exception(self.timeout_error())
        self._pump()

    def _failed(self, worker: Worker, job: _Job | None, reason: str) -> None:
        worker.kill()
        self._replace(reason)
        if job is not None:
            self.queue.release(job)
            if not job.future.done():
                job.future.set_exception(
                    WorkerFailed(
                        "the detection worker process died during this request; it is being "
                        "replaced and the request fails closed"
                    )
                )

    # replacing workers (a thread per start) ---------------------------------------------------
    def _replace(self, reason: str) -> None:
        logger.warning("detection worker replaced (%s)", reason)
        if self._on_restart is not None:
            self._on_restart(reason)
        if self._closed:
            return
        self._started += 1
        threading.Thread(
            target=self._start_into_incoming,
            args=(self._started, True),
            name="bastion-detect-start",
            daemon=True,
        ).start()

    def _start_into_incoming(self, index: int, retry: bool) -> None:
        with self._incoming_lock:
            self._starting += 1
        try:
            while not self._closed:
                version, spec = self._latest
                worker = start_worker(self._ctx, index, version, spec)
                if worker is not None:
                    with self._incoming_lock:
                        self._incoming.append(worker)
                    loop = self._loop
                    if loop is not None and not loop.is_closed():
                        with contextlib.suppress(RuntimeError):  # closed meanwhile: adopted later
                            loop.call_soon_threadsafe(self._adopt_and_pump)
                    return
                if not retry:
                    retry = True  # start-up failed: keep trying in the background
                time.sleep(RESTART_BACKOFF_S)
        finally:
            with self._incoming_lock:
                self._starting -= 1

    def _adopt_and_pump(self) -> None:
        self._adopt()
        self._pump()

    def _refused(self, reason: str) -> None:
        if self._on_refused is not None:
            self._on_refused(reason)


def _consume(future: asyncio.Future[list[Finding]]) -> None:
    if not future.cancelled():
        future.exception()


def _remote_error(name: str, message: str | None) -> DetectError:
    known = _REMOTE_ERRORS.get(name)
    if known is not None and message:
        return known(message)
    return WorkerFailed(f"detection failed in a worker process ({name}); the request fails closed")
