"""Fixtures for the integration tests: the sidecar pair around the real payment service.

``mesh`` (one pair per test module, checked to be alive after each test), ``fresh_mesh`` (a pair per test)
and ``shared_mesh`` come from :mod:`tests.support.mesh`; the ``procs`` fixture from ``tests/conftest.py``.
"""

from tests.support.mesh import fresh_mesh, mesh, shared_mesh

__all__ = ["fresh_mesh", "mesh", "shared_mesh"]
