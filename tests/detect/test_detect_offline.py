"""Detection never touches the network: building the analyzer (spaCy from its package, Presidio,
tldextract) and analysing text with e-mails and URLs open no socket."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent(
    """
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    from gateway.detect import DetectionSpec, Detector, TextRef
    from gateway.detect.engine import build_presidio_defaults

    text = "Mail jane.doe@example.co.uk or see https://sub.example.org/x?u=a%40b.com"
    detector = Detector(DetectionSpec())
    found = {f.entity_type for f in detector.analyze([TextRef("t", text)])}
    assert "EMAIL_ADDRESS" in found, found
    # Presidio's own e-mail and URL recognizers call tldextract on every match.
    defaults = build_presidio_defaults()
    results = defaults.analyze(text, language="en")
    assert any(r.entity_type == "EMAIL_ADDRESS" for r in results), results
    print("offline-ok")
    """
)


def test_no_socket_during_construction_and_analysis() -> None:
    """With every socket entry point raising, the analyzer builds and finds e-mails and URLs
    (a fresh interpreter, so nothing was built or cached before the guard went up)."""
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(REPO / ".nonexistent-home")},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "offline-ok" in result.stdout
