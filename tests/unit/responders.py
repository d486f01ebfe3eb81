"""Helpers shared by the tests of the responders (test_icmp.py,
test_ndp.py): an injected clock and the counter check."""


class Clock:
    """A clock that says ``now`` until a test moves it."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def only_counter(keys):
    """``only(counters, name, n=1)``: asserts ``counters`` has exactly the
    names ``keys``, ``n`` under ``name`` and 0 under every other."""
    def only(counters, name, n=1):
        want = dict.fromkeys(keys, 0)
        want[name] = n
        assert counters == want
    return only
