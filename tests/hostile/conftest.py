"""Fixtures for the hostile suite: the sidecar pair around the real payment service (:mod:`tests.support.mesh`)."""

from tests.support.mesh import fresh_mesh, mesh, shared_mesh

__all__ = ["fresh_mesh", "mesh", "shared_mesh"]
