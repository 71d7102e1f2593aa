"""Detection in a bounded pool of worker processes, with a fair share per identity.

Why processes: detection is mostly pure Python (regex recognizers, normalization, spaCy's
Python parts), and the GIL makes a thread pool one core wide for it. Each worker process builds
its own :class:`~gateway.detect.Detector` from the policy's :class:`DetectionSpec`, once per
policy version, and loads spaCy once (at start-up, so the first request does not wait for it).
Workers come from the ``forkserver`` start method, never ``fork``: the gateway has threads.

Per request, :meth:`DetectionPool.analyze` queues a job under the caller's identity. One
dispatcher thread per worker takes jobs **round-robin over identities** (a caller with many
queued jobs gets one turn like everyone else) and sends each to its worker over a pipe.

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
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

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

# A worker's start (import, spaCy model, one warm-up analysis) may take this long before the
# dispatcher gives up on it, logs and tries again: a cold disk and a busy machine take seconds.
START_TIMEOUT_S = 120.0
# Pause between failed worker starts, so a worker that cannot start does not spin a core.
RESTART_BACKOFF_S = 1.0
_WARM_UP = (TextRef("warmup", "Warm up the analyzer, please: Maria Lopez called."),)
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


# -- the worker process ---------------------------------------------------------------------


def _worker_main(conn: Connection) -> None:
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
            message = conn.recv()
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
            conn.send(reply)
        except (OSError, ValueError):
            return


# -- the queue ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    identity: str
    version: str
    spec: DetectionSpec
    texts: tuple[TextRef, ...] = field(repr=False)
    chars: int
    deadline: float  # time.monotonic()
    future: Future[list[Finding]] = field(default_factory=Future)
    queued: bool = True


class _FairQueue:
    """Jobs per identity, taken round-robin; admission by the global and per-identity bounds."""

    def __init__(self, *, max_jobs: int, identity_max_chars: int) -> None:
        self._max_jobs = max_jobs
        self._identity_max_chars = identity_max_chars
        self._queues: dict[str, deque[_Job]] = {}  # insertion order is the round-robin order
        self._chars: dict[str, int] = {}  # queued + running, per identity
        self._jobs = 0  # queued + running
        self._cond = threading.Condition()
        self.closed = False

    def submit(self, job: _Job) -> None:
        with self._cond:
            if self.closed:
                raise DetectorBusy("the gateway is shutting down", reason="closed")
            if self._jobs >= self._max_jobs:
                raise DetectorBusy(
                    f"detection has {self._jobs} requests queued or running, the limit "
                    f"(limits.max_concurrent_detections); retry later",
                    reason="queue_full",
                )
            held = self._chars.get(job.identity, 0)
            if held and held + job.chars > self._identity_max_chars:
                raise DetectorBusy(
                    f"this identity has {held} characters in detection; with this request it "
                    f"would pass its share of {self._identity_max_chars} "
                    "(limits.detect_identity_max_chars); retry later",
                    reason="identity_share",
                )
            self._chars[job.identity] = held + job.chars
            self._jobs += 1
            self._queues.setdefault(job.identity, deque()).append(job)
            self._cond.notify()

    def take(self) -> _Job | None:
        """The next job, round-robin over identities; None once closed."""
        with self._cond:
            while not self._queues and not self.closed:
                self._cond.wait()
            if self.closed:
                return None
            identity = next(iter(self._queues))
            queue = self._queues.pop(identity)
            job = queue.popleft()
            if queue:
                self._queues[identity] = queue  # back of the line
            job.queued = False
            return job

    def withdraw(self, job: _Job) -> None:
        """Drop a job that is still queued (its caller gave up); running ones finish."""
        with self._cond:
            if not job.queued:
                return
            queue = self._queues.get(job.identity)
            if queue is not None and job in queue:
                queue.remove(job)
                if not queue:
                    del self._queues[job.identity]
                job.queued = False
                self._release(job)

    def done(self, job: _Job) -> None:
        with self._cond:
            self._release(job)

    def _release(self, job: _Job) -> None:
        left = self._chars.get(job.identity, 0) - job.chars
        if left > 0:
            self._chars[job.identity] = left
        else:
            self._chars.pop(job.identity, None)
        self._jobs -= 1

    def close(self) -> list[_Job]:
        """Stop taking jobs; return the ones still queued (their callers get DetectorBusy)."""
        with self._cond:
            self.closed = True
            left = [job for queue in self._queues.values() for job in queue]
            self._queues.clear()
            for job in left:
                job.queued = False
                self._release(job)
            self._cond.notify_all()
            return left

    def depth(self) -> int:
        with self._cond:
            return self._jobs


# -- one worker and its dispatcher thread --------------------------------------------------


class _Slot:
    """One worker process and the thread that feeds it (blocking pipe I/O, off the loop)."""

    def __init__(self, pool: DetectionPool, index: int) -> None:
        self._pool = pool
        self.index = index
        self.process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._version: str | None = None  # the version the worker holds a Detector for
        self.ready = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"bastion-detect-{index}", daemon=True
        )

    # lifecycle ------------------------------------------------------------------------------
    def _spawn(self) -> bool:
        """Start a worker and warm it with the latest spec; False (logged) if it failed."""
        ctx = self._pool.mp_context
        parent, child = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=_worker_main, args=(child,), name=f"bastion-detect-{self.index}", daemon=True
        )
        try:
            process.start()
        except OSError as exc:
            logger.error("detection worker %d did not start (%s)", self.index, type(exc).__name__)
            parent.close()
            return False
        finally:
            child.close()
        self.process, self._conn, self._version = process, parent, None
        version, spec = self._pool.latest()
        try:
            parent.send((version, spec, _WARM_UP))
            if not parent.poll(START_TIMEOUT_S):
                raise TimeoutError
            reply = parent.recv()
        except (OSError, EOFError, TimeoutError) as exc:
            logger.error("detection worker %d did not warm up (%s)", self.index, type(exc).__name__)
            self._kill()
            return False
        if not reply[0]:
            logger.error(
                "detection worker %d cannot build the policy's detector (%s)",
                self.index,
                reply[1],
            )
            self._kill()
            return False
        self._version = version
        return True

    def _kill(self) -> None:
        self.ready.clear()
        process, conn = self.process, self._conn
        self.process, self._conn, self._version = None, None, None
        if conn is not None:
            conn.close()
        if process is not None:
            process.kill()
            process.join(5)

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def stop(self) -> None:
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):  # already gone: nothing to stop
                conn.send(None)
        process = self.process
        if process is not None:
            process.join(2)
        self._kill()

    # dispatch -------------------------------------------------------------------------------
    def _run(self) -> None:
        queue = self._pool.queue
        while not queue.closed:
            if not self.alive():
                self.ready.clear()
                if not self._spawn():
                    time.sleep(RESTART_BACKOFF_S)
                    continue
                self.ready.set()
            job = queue.take()
            if job is None:
                break
            try:
                if not job.future.set_running_or_notify_cancel():
                    continue  # the caller gave up while it was queued
                try:
                    result = self._call(job)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller, who fails closed
                    job.future.set_exception(exc)
                else:
                    job.future.set_result(result)
            finally:
                queue.done(job)
        self.stop()

    def _call(self, job: _Job) -> list[Finding]:
        pool = self._pool
        remaining = job.deadline - time.monotonic()
        if remaining <= 0:
            raise pool.timeout_error()
        conn = self._conn
        if conn is None:  # pragma: no cover - _run spawns before taking a job
            raise WorkerFailed("no detection worker is running; the request fails closed")
        spec = None if self._version == job.version else job.spec
        try:
            conn.send((job.version, spec, job.texts))
            self._version = job.version
            answered = conn.poll(remaining)
            reply = conn.recv() if answered else None
        except (OSError, EOFError):
            pool.restarted("crashed")
            self._kill()
            raise WorkerFailed(
                "the detection worker process died during this request; it is being replaced "
                "and the request fails closed"
            ) from None
        if reply is None:
            pool.restarted("timeout")
            self._kill()
            raise pool.timeout_error()
        if reply[0]:
            findings: list[Finding] = reply[1]
            return findings
        self._version = None  # a failed build leaves no detector: send the spec again
        name, message = reply[1], reply[2]
        known = _REMOTE_ERRORS.get(name)
        if known is not None and message:
            raise known(message)
        raise WorkerFailed(
            f"detection failed in a worker process ({name}); the request fails closed"
        )


# -- the pool -------------------------------------------------------------------------------


class DetectionPool:
    """``processes`` detection workers behind a fair, bounded queue (see the module docstring).

    ``on_refused(reason)`` and ``on_restart(reason)`` are called for metrics (reasons only,
    never identities or text).
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
        self.mp_context: Any = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # Imported once in the fork server, so a replaced worker starts in about the time
            # its spaCy model takes to load.
            self.mp_context.set_forkserver_preload(
                ["gateway.detect.detector", "presidio_analyzer", "spacy"]
            )
        self._on_refused = on_refused
        self._on_restart = on_restart
        self._latest_lock = threading.Lock()
        self._latest: tuple[str, DetectionSpec] = ("", DetectionSpec())
        self._slots = [_Slot(self, i) for i in range(processes)]
        self._started = False

    # lifecycle ------------------------------------------------------------------------------
    def start(
        self, version: str | None = None, spec: DetectionSpec | None = None, *, wait: bool = True
    ) -> None:
        """Start every worker, each warmed with ``spec`` (or the default spec); with ``wait``,
        block until all answered their warm-up (or ``START_TIMEOUT_S`` passed: logged)."""
        if spec is not None and version is not None:
            self._remember(version, spec)
        if not self._started:
            self._started = True
            for slot in self._slots:
                slot.thread.start()
        if wait and not self.wait_ready(START_TIMEOUT_S):
            logger.error(
                "detection workers are not all ready after %.0f s; requests may wait for them",
                START_TIMEOUT_S,
            )

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until every worker is up and warm (True), or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        return all(slot.ready.wait(max(0.0, deadline - time.monotonic())) for slot in self._slots)

    def close(self) -> None:
        """Refuse new work, fail what is queued, stop the workers."""
        for job in self.queue.close():
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(
                    DetectorBusy("the gateway is shutting down", reason="closed")
                )
        for slot in self._slots:
            if slot.thread.is_alive():
                slot.thread.join(10)
            else:
                slot.stop()

    # requests -------------------------------------------------------------------------------
    async def analyze(
        self, identity: str, version: str, spec: DetectionSpec, texts: Sequence[TextRef]
    ) -> list[Finding]:
        """Findings for ``texts`` as ``Detector(spec).analyze`` gives them, computed in a worker.

        Raises :class:`DetectorBusy` (503) when refused or late, :class:`WorkerFailed` (or
        detection's own error) when the worker failed: either way nothing may go to a managed
        route on this request's behalf.
        """
        self._remember(version, spec)
        job = _Job(
            identity=identity,
            version=version,
            spec=spec,
            texts=tuple(texts),
            chars=sum(len(t.text) for t in texts),
            deadline=time.monotonic() + self.timeout_s,
        )
        try:
            self.queue.submit(job)
        except DetectorBusy as exc:
            self._refused(exc.reason)
            raise
        try:
            async with asyncio.timeout(self.timeout_s):
                return await asyncio.wrap_future(job.future)
        except TimeoutError:
            self._refused("timeout")
            raise self.timeout_error() from None
        finally:
            if not job.future.done():
                self.queue.withdraw(job)

    def timeout_error(self) -> DetectorBusy:
        return DetectorBusy(
            f"detection did not finish within {self.timeout_s} s (limits.detect_timeout_s); "
            "retry later",
            reason="timeout",
        )

    # introspection (metrics, tests) -----------------------------------------------------------
    def depth(self) -> int:
        """Jobs queued or running."""
        return self.queue.depth()

    def worker_pids(self) -> list[int | None]:
        return [
            slot.process.pid if slot.process is not None and slot.alive() else None
            for slot in self._slots
        ]

    def latest(self) -> tuple[str, DetectionSpec]:
        with self._latest_lock:
            return self._latest

    # internals --------------------------------------------------------------------------------
    def _remember(self, version: str, spec: DetectionSpec) -> None:
        if self._latest[0] != version:
            with self._latest_lock:
                self._latest = (version, spec)

    def _refused(self, reason: str) -> None:
        if self._on_refused is not None:
            self._on_refused(reason)

    def restarted(self, reason: str) -> None:
        logger.warning("detection worker replaced (%s)", reason)
        if self._on_restart is not None:
            self._on_restart(reason)
