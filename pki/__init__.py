"""Bastion's trust material: the internal CA, TLS contexts, secrets and (``pki.hsm``) the HSM.

Never imports ``gateway`` or ``inference``; both use it.
"""

from pki.errors import BastionError, PKIError
from pki.secret import Secret

__all__ = ["BastionError", "PKIError", "Secret"]
