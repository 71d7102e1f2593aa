"""Imported only by the detection pool's fork server (``set_forkserver_preload``): loads the
shared Presidio analyzer and its spaCy model once there, so every worker forked from it starts
with the model already in memory (copy-on-write) in well under a second, at start-up and when a
crashed or stuck worker is replaced. The fork server is single-threaded when it forks.

If the model cannot load here, workers load it themselves and report the error per request.
"""

from __future__ import annotations

import contextlib

from gateway.detect.engine import get_analyzer
from gateway.detect.errors import DetectError

with contextlib.suppress(DetectError):  # each worker then retries, and fails closed naming it
    get_analyzer()
