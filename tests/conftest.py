"""Shared fixtures.  Root-only tests are marked `root`; CI runs as root and
runs them all, so a non-root run fails them loudly instead of skipping."""

import os

import pytest


@pytest.fixture
def need_root():
    if os.geteuid() != 0:
        pytest.fail("this test needs root (namespaces, BPF): run it as "
                    "root, as CI does")
