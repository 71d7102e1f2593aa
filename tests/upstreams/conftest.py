"""The real gateway fixtures (tests/gateway/conftest.py), for the few end-to-end upstream tests."""

from tests.gateway.conftest import billing, gateway, start_gateway

__all__ = ["billing", "gateway", "start_gateway"]
