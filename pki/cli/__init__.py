"""The trust material's ``bastion`` commands: ``hsm`` (token and keys).

Loaded by the ``bastion`` dispatcher (``gateway.cli``) only when one of them runs; like the rest
of ``pki``, these modules never import ``gateway`` or ``inference``. The ``--hsm-*`` options
shared with ``bastion model``, ``bastion secrets`` and ``bastion bundle`` live in
:mod:`pki.cli.hsm`.
"""
