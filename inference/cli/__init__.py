"""The worker's ``bastion`` commands: ``worker`` (run it) and ``model`` (artifacts).

Loaded by the ``bastion`` dispatcher (``gateway.cli``) only when one of them runs; like the rest
of ``inference``, these modules never import ``gateway``.
"""
