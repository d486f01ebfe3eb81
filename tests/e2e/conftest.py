"""Fixtures for the namespace tests: root is required, names are unique.

Tests marked ``root`` fail (never skip) when not run as root.  Every lab and
namespace a test makes is named with PREFIX ("pft", or $PYFWD_TEST_PREFIX,
then random characters up to 8), so
a run collides with nothing else on the machine, and a session finalizer
removes whatever a failed test left behind.
"""

import itertools
import os
import random
import string

import pytest
from pyroute2 import netns

from pyfwd.lab import topology as lab

# PYFWD_TEST_PREFIX (e.g. "pfm-"): a run's own start of the names, made up
# to 8 characters at random (interface names are derived from them).
_BASE = os.environ.get("PYFWD_TEST_PREFIX", "pft")[:6]
PREFIX = _BASE + "".join(random.choices(string.ascii_lowercase + string.digits,
                                        k=8 - len(_BASE)))
_counter = itertools.count()


def _leftover_namespaces() -> list:
    return sorted(n for n in netns.listnetns() if n.startswith(PREFIX))


@pytest.fixture(scope="session")
def _session_cleanup():
    """Remove whatever this run left behind, once, at the end."""
    yield
    lab.down_all(prefix=PREFIX)
    for name in _leftover_namespaces():          # unmarked test namespaces
        netns.remove(name)


@pytest.fixture(autouse=True)
def _root(request):
    """Tests marked ``root`` fail loudly without root (tests/conftest.py's
    need_root); they are never skipped (CI runs as root)."""
    if request.node.get_closest_marker("root") is not None:
        request.getfixturevalue("need_root")
        request.getfixturevalue("_session_cleanup")


@pytest.fixture
def prefix() -> str:
    """The prefix of every name this test run uses."""
    return PREFIX


@pytest.fixture
def new_name():
    """A factory of fresh lab names: PREFIX plus two characters."""
    alphabet = string.ascii_lowercase + string.digits

    def make() -> str:
        n = next(_counter)
        return PREFIX + alphabet[n // 36 % 36] + alphabet[n % 36]

    return make


@pytest.fixture
def foreign_netns(new_name):
    """A factory of namespaces that are not ours (no marker); removed after
    the test."""
    made = []

    def make(name=None) -> str:
        name = name or new_name() + "-foreign"
        netns.create(name)
        made.append(name)
        return name

    yield make
    for name in made:
        if name in netns.listnetns():
            netns.remove(name)
