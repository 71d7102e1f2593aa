"""The on-prem inference worker (a separate process; never imports ``gateway``)."""
