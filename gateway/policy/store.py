"""``PolicyStore``: the live policy, hot-reloaded, with an optional shadow candidate.

- Reloads when the file's (mtime, size, inode) changes, polled by a daemon thread every
  ``poll_interval`` seconds (:meth:`start` / :meth:`stop`), and on SIGHUP
  (:meth:`install_sighup`, main thread only; the handler only wakes the thread).
- A new file with any error is refused: the error is logged (file:line:col, never request
  text) and the last good policy stays. Until a policy has loaded, :meth:`current` is None and
  callers deny (:func:`gateway.policy.engine.deny_without_policy`).
- Shadow mode: a candidate policy is decided beside the live one; :meth:`shadow_compare` counts
  differences by (live rule, shadow rule) in ``bastion_policy_shadow_differences_total`` and in
  :meth:`shadow_report`, the same comparison and report shape as ``bastion policy replay``
  (:mod:`gateway.policy.replay`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from gateway.policy.decision import Decision, RequestFacts
from gateway.policy.engine import decide, deny_without_policy
from gateway.policy.errors import PolicyFileError
from gateway.policy.loader import load_policy
from gateway.policy.model import Policy
from gateway.policy.replay import ComparisonReport, differs, header_names, outcome_of

__all__ = ["PolicyStore"]

logger = logging.getLogger(__name__)

_Stamp = tuple[int, int, int]


@dataclass
class _Watched:
    path: Path
    stamp: _Stamp | None = None
    policy: Policy | None = None
    error: str | None = None


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class PolicyStore:
    """Holds the live (and optional shadow) policy; thread-safe reads via :meth:`current`."""

    def __init__(
        self,
        path: str | Path,
        *,
        shadow_path: str | Path | None = None,
        poll_interval: float = 1.0,
        registry: CollectorRegistry | None = None,
        entities: frozenset[str] | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval}")
        self._live = _Watched(Path(path))
        self._shadow = _Watched(Path(shadow_path)) if shadow_path is not None else None
        self._poll_interval = poll_interval
        self._entities = entities
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._force = False
        self._thread: threading.Thread | None = None
        self._previous_handler: Any = None
        self._sighup_installed = False
        registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._differences = Counter(
            "bastion_policy_shadow_differences",
            "Requests the shadow policy decided differently from the live one.",
            ["live_rule", "shadow_rule"],
            registry=registry,
        )
        self._shadow_report: ComparisonReport | None = None
        self._report_lock = threading.Lock()  # not _lock: a reload must not stall requests
        self._reloads = Counter(
            "bastion_policy_reloads",
            "Policy (re)load attempts by policy role and outcome.",
            ["role", "outcome"],
            registry=registry,
        )

    # ---- reading -----------------------------------------------------------------------

    def current(self) -> Policy | None:
        """The live policy, or None if none ever loaded (callers then deny)."""
        return self._live.policy

    def header_names(self) -> frozenset[str]:
        """The header names the live and the shadow policy read (the audit trail keeps their
        values' digests, for replay)."""
        return header_names(self.current()) | header_names(self.shadow())

    def shadow_report(self) -> ComparisonReport | None:
        """Differences counted since the current shadow policy loaded (None: no shadow yet)."""
        return self._shadow_report

    def shadow(self) -> Policy | None:
        return self._shadow.policy if self._shadow is not None else None

    @property
    def last_error(self) -> str | None:
        """Why the most recent load of the live file was refused (None after a good load)."""
        return self._live.error

    def decide(self, facts: RequestFacts) -> Decision:
        """The live decision; deny when no policy has loaded."""
        policy = self._live.policy
        return deny_without_policy() if policy is None else decide(facts, policy)

    def shadow_compare(self, facts: RequestFacts) -> tuple[Decision, Decision | None]:
        """(live, shadow) decisions; a difference is counted and logged (rule ids only)."""
        live = self.decide(facts)
        candidate = self.shadow()
        if candidate is None:
            return live, None
        shadow = decide(facts, candidate)
        with self._report_lock:
            report = self._shadow_report
            if report is None or report.candidate_version != candidate.version:
                report = self._shadow_report = ComparisonReport(mode="shadow", candidate=candidate)
            report.add(
                outcome_of(live), outcome_of(shadow), identity=facts.identity, model=facts.model
            )
        if differs(outcome_of(live), outcome_of(shadow)):
            self._differences.labels(live_rule=live.rule_id, shadow_rule=shadow.rule_id).inc()
            logger.info(
                "shadow policy differs: live rule %s -> %s %s, shadow rule %s -> %s %s",
                live.rule_id,
                live.action,
                live.route,
                shadow.rule_id,
                shadow.action,
                shadow.route,
            )
        return live, shadow

    # ---- loading -----------------------------------------------------------------------

    def reload(self, *, force: bool = False) -> bool:
        """Load the files whose stamp changed (all when ``force``). True if a policy changed."""
        with self._lock:
            changed = self._reload_one(self._live, "live", force)
            if self._shadow is not None:
                changed = self._reload_one(self._shadow, "shadow", force) or changed
            return changed

    def _reload_one(self, watched: _Watched, role: str, force: bool) -> bool:
        stamp = _stamp(watched.path)
        if not force and stamp is not None and stamp == watched.stamp:
            return False
        if not force and stamp is None and watched.stamp is None and watched.error is not None:
            return False  # still missing; already reported
        watched.stamp = stamp
        try:
            policy = load_policy(watched.path, entities=self._entities)
        except PolicyFileError as exc:
            self._reloads.labels(role=role, outcome="refused").inc()
            kept = watched.policy.version if watched.policy else "none (requests are denied)"
            logger.error("%s policy refused, keeping %s: %s", role, kept, exc)
            watched.error = str(exc)  # set last: once visible, the refusal is logged
            return False
        self._reloads.labels(role=role, outcome="loaded").inc()
        changed = watched.policy is None or watched.policy.version != policy.version
        if changed:
            watched.policy = policy
            logger.info("%s policy %s loaded: version %s", role, policy.name, policy.version)
        watched.error = None  # set last, as above
        return changed

    # ---- watching ----------------------------------------------------------------------

    def start(self) -> None:
        """Load now, then watch the files in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self.reload(force=True)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="policy-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and restore the previous SIGHUP handler."""
        self.uninstall_sighup()
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            self._wake.set()
            thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._poll_interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            force, self._force = self._force, False
            self.reload(force=force)

    def install_sighup(self) -> None:
        """Reload on SIGHUP. Call from the main thread; starts the watch thread if needed."""
        if self._sighup_installed:
            return
        self._previous_handler = signal.signal(signal.SIGHUP, self._on_sighup)
        self._sighup_installed = True
        self.start()

    def uninstall_sighup(self) -> None:
        if not self._sighup_installed:
            return
        previous = self._previous_handler
        signal.signal(signal.SIGHUP, signal.SIG_DFL if previous is None else previous)
        self._sighup_installed = False

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread between bytecodes: no locks, no I/O, just wake the watcher.
        self._force = True
        self._wake.set()
