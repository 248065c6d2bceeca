"""Tests that need a real Prometheus: :func:`prometheus_binary` finds it or skips with one reason."""

from __future__ import annotations

import shutil

import pytest

from mesh_ctl.runtime.prometheus import INSTALL_HINT, find_binary


def prometheus_binary() -> str:
    binary = find_binary()
    if binary is None:
        pytest.skip(f"no prometheus on PATH (CI installs it: {INSTALL_HINT})")
    return binary


def promtool_binary() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip(f"no promtool on PATH (CI installs it: {INSTALL_HINT})")
    return binary
