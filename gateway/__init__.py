"""The Bastion gateway: TLS edge, identity, OpenAI-compatible API, policy, detection,
sanitization, routing, upstream clients, audit, telemetry and the ``bastion`` CLI."""
