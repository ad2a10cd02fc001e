"""Backends that run hubs (local processes, Kubernetes), their lifecycle table and health probes.

Nothing here imports Flask or ``console``: backends get plain dataclasses and return plain data.
"""
