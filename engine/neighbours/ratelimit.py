"""Rate limits on the answers to ARP and neighbour solicitations.

Answering "who-has VIP" costs the control plane a parse and a frame; a
host on the segment that floods requests (or spoofs many senders) must
not make the balancer spend its time answering it, nor make it flood the
segment with replies.  ``SourceLimiter`` gives each source (the asking
MAC) its own token bucket and all of them one shared bucket: a single
noisy source runs out of its own tokens long before it can eat the
shared ones, so the other clients' requests are still answered; many
sources together are capped by the shared bucket.

``NeighbourLimits`` is the ``[engine]`` keys that set them (the same
figures for ARP and for IPv6 neighbour solicitations, each kind with its
own buckets):

    arp_rate = 2000           # answers per second, all sources together
    arp_burst = 500           # ... at once, after a quiet spell
    arp_source_rate = 20      # answers per second to one MAC
    arp_source_burst = 40     # ... at once

Pure: no sockets, the clock injected (the buckets are icmp.py's
TokenBucket).
"""

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable

from ..errors import ConfigError
from .icmp import TokenBucket

__all__ = ["NeighbourLimits", "SourceLimiter", "MAX_SOURCES"]

MAX_SOURCES = 4096      # sources with a bucket of their own (oldest out)


@dataclass(frozen=True)
class NeighbourLimits:
    """The rate limits of ARP and NDP answers (see the module's
    docstring); ``max_sources``: the sources remembered (LRU)."""

    arp_rate: float = 2000.0
    arp_burst: float = 500.0
    arp_source_rate: float = 20.0
    arp_source_burst: float = 40.0
    max_sources: int = MAX_SOURCES

    KEYS = ("arp_rate", "arp_burst", "arp_source_rate", "arp_source_burst")

    def __post_init__(self):
        for name in self.KEYS:
            value = getattr(self, name)
            burst = name.endswith("_burst")
            if isinstance(value, bool) or not isinstance(
                    value, (int, float)) or not math.isfinite(value) \
                    or value < (1 if burst else 0) or value == 0:
                raise ConfigError(
                    f"engine.{name} = {value!r}: expected " +
                    ("a number of answers >= 1" if burst else
                     "a positive number of answers per second"))

    @classmethod
    def from_config(cls, values):
        """From a dict of the [engine] keys present (KEYS); ConfigError
        naming the key."""
        return cls(**{k: values[k] for k in cls.KEYS if k in values})

    def limiter(self, clock: Callable[[], float] = time.monotonic):
        """A fresh SourceLimiter with these figures."""
        return SourceLimiter(self.arp_rate, self.arp_burst,
                             self.arp_source_rate, self.arp_source_burst,
                             self.max_sources, clock)


class SourceLimiter:
    """Per-source and total token buckets.

    ``allow(source)`` -> True when an answer to ``source`` (any hashable:
    the asking MAC) may leave now.  The source's own bucket is asked
    first: a source over its rate spends nothing of the shared bucket.
    At most ``max_sources`` buckets are kept; a new source beyond that
    pushes out the one heard from least recently (a fresh bucket is full,
    so a source pushed out only gets its burst back: the shared bucket
    still caps the total).

    ``counters``: ``limited_source`` (refused: the source's bucket was
    empty), ``limited_total`` (refused: the shared one was),
    ``sources_evicted``.  Not thread-safe: the punt thread alone calls it.
    """

    COUNTERS = ("limited_source", "limited_total", "sources_evicted")

    def __init__(self, rate: float, burst: float, source_rate: float,
                 source_burst: float, max_sources: int = MAX_SOURCES,
                 clock: Callable[[], float] = time.monotonic):
        if isinstance(max_sources, bool) or not isinstance(max_sources, int) \
                or max_sources < 1:
            raise ConfigError(f"max_sources {max_sources!r}: expected an "
                              "integer >= 1")
        self._total = TokenBucket(rate, burst, clock)
        self._rate, self._burst = source_rate, source_burst
        TokenBucket(source_rate, source_burst, clock)   # checks them
        self._clock = clock
        self.max_sources = max_sources
        self._sources = OrderedDict()
        self.counters = dict.fromkeys(self.COUNTERS, 0)

    def __len__(self):
        return len(self._sources)

    def allow(self, source: Hashable) -> bool:
        bucket = self._sources.get(source)
        if bucket is None:
            if len(self._sources) >= self.max_sources:
                self._sources.popitem(last=False)
                self.counters["sources_evicted"] += 1
            bucket = self._sources[source] = TokenBucket(
                self._rate, self._burst, self._clock)
        else:
            self._sources.move_to_end(source)
        if not bucket.take():
            self.counters["limited_source"] += 1
            return False
        if not self._total.take():
            self.counters["limited_total"] += 1
            return False
        return True
