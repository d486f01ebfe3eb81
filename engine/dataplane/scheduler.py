"""Schedulers: the tables the data plane picks a real from for a new flow.

Pure functions, values in and numpy arrays out, no I/O.  A table is a 1-D
``numpy.uint16`` array; each entry is an index into the VIP's list of reals,
or NO_REAL when there is nothing to schedule to.  Python builds a table and
the data plane gets a copy of it, published all at once; a table is never
edited in place.

Two kinds of table, read two ways by the data plane:

``maglev``
    Consistent hashing (Maglev, NSDI 2016, section 3.4): the data plane
    reads entry ``hash(5-tuple) % len(table)``.  The same inputs give the same
    table on every node, so any node sends a flow to the same real, and a
    change of reals moves few flows.
``wrr``
    Smooth weighted round-robin (nginx): the data plane reads entry
    ``counter++ % len(table)``.

Reals are given as two lists of the same length: ``keys``, a stable identity
per real (``"10.0.0.11:80"``), and ``weights``, integers from 0 to 65535.
Weight 0 drains a real: it gets no entries, so no new flows.
"""

import hashlib
import math

import numpy as np

from . import native as _native
from ..errors import ConfigError
from ..model import MAGLEV_SIZE_DEFAULT

NO_REAL = _native.lib.PYFWD_NO_REAL    # a ring entry of nobody: 0xFFFF
MAX_REALS = NO_REAL           # indices 0..65534: 0xFFFF is NO_REAL
MAX_WEIGHT = 0xFFFF
# The largest table either scheduler builds: Cilium's largest Maglev table.
TABLE_SIZE_MAX = 131071
WRR_LEN_DEFAULT = 65536
SCHEDULERS = ("maglev", "wrr")

# Part of the table's definition: changing it moves most flows when nodes
# running the old and the new code share a VIP (a rolling upgrade).
_MAGLEV_PERSON = b"pyfwd-maglev"


def build_table(scheduler, keys, weights, size=MAGLEV_SIZE_DEFAULT):
    """Build the table of one VIP for the named scheduler.

    @param scheduler one of SCHEDULERS
    @param keys one stable identity string per real
    @param weights one integer from 0 to 65535 per real
    @param size for "maglev", the table size (see maglev_table); for "wrr",
        the most entries the table may have (see wrr_table's max_len)
    @return numpy.uint16 array of real indices or NO_REAL

    Raises ConfigError for an unknown scheduler (the message lists the known
    ones) and for anything maglev_table or wrr_table refuses.  Keys are
    checked for both schedulers, though "wrr" does not use them.
    """
    if scheduler == "maglev":
        return maglev_table(keys, weights, size)
    if scheduler == "wrr":
        _check_reals(keys, weights)
        return wrr_table(weights, max_len=size)
    raise ConfigError(f"scheduler {scheduler!r}: expected one of "
                      f"{', '.join(SCHEDULERS)}")


def maglev_table(keys, weights, size=MAGLEV_SIZE_DEFAULT):
    """Build a weighted Maglev lookup table.

    @param keys one stable identity string per real, e.g. "10.0.0.11:80";
        the table depends on the keys, never on where the process runs
    @param weights one integer from 0 to 65535 per real; 0 = no entries
    @param size a prime, larger than len(keys), at most TABLE_SIZE_MAX;
        Maglev balances best when size is much larger than len(keys)
        (the paper uses size > 100 * len(keys))
    @return numpy.uint16 array of `size` entries, each the index of a real
        with weight > 0; all NO_REAL when no real has weight > 0

    Raises ConfigError naming the value for: keys that are not unique
    non-empty strings, weights that are not integers from 0 to 65535, a
    length mismatch, more than 65535 reals, or a bad size.

    Each real's permutation of the entries is the paper's: offset =
    h1 % size, skip = h2 % (size - 1) + 1, permutation[j] = (offset + j *
    skip) % size, where h1 and h2 are the first and last 8 bytes, read
    little-endian, of blake2b(key as UTF-8, digest_size=16,
    person=b"pyfwd-maglev").  Reals then take turns, each claiming the next
    free entry of its permutation, until the table is full.

    Weights follow Katran's MaglevHashV2: in every round, in index order,
    each real adds its weight to a credit and gets a turn when the credit
    reaches the largest weight W, paying W for it.  A real of weight w thus
    gets a turn in round r when floor(r*w/W) > floor((r-1)*w/W), and its
    entry count is within 2 + 2*N*w/sum(weights) of size*w/sum(weights)
    (N reals; e.g. +-2 entries when weights are equal).  The turns are
    computed with numpy and the table filled in C (pyfwd_maglev_fill):
    about 10 ms for 65537 entries and 1000 reals.
    """
    keys, weights = _check_reals(keys, weights)
    _check_maglev_size(size, len(keys))
    if not any(weights):
        return np.full(size, NO_REAL, dtype=np.uint16)
    offsets, skips = zip(*(_maglev_permutation(k, size) for k in keys))
    return _native.maglev_fill(size, offsets, skips,
                               _maglev_turns(weights, size))


def wrr_table(weights, max_len=WRR_LEN_DEFAULT):
    """Build a smooth weighted round-robin sequence (nginx's algorithm).

    @param weights one integer from 0 to 65535 per real; 0 = no entries
    @param max_len the most entries the table may have: at least the number
        of reals with weight > 0, at most TABLE_SIZE_MAX
    @return numpy.uint16 array of real indices; [NO_REAL] when no real has
        weight > 0

    Raises ConfigError naming the value for weights that are not integers
    from 0 to 65535, more than 65535 reals, or a bad max_len.

    The weights are divided by their gcd, so the table is one cycle and real
    i appears exactly weights[i] / gcd times.  If the sum is still larger
    than max_len, the weights are scaled down: w' = max(1, floor(w*T/sum))
    with the largest T that makes sum(w') <= max_len, so each real with
    weight > 0 keeps at least one entry and is off its proportional share
    by less than one entry; then the gcd is taken out again.

    The order is nginx's smooth weighted round-robin: at each step every
    real adds its weight to its current value, the real with the largest
    current value (the lowest index on a tie) is picked and pays the sum of
    the weights.  Heavy reals are spread out: weights (5, 1, 1) give
    0 0 1 0 2 0 0, not 0 0 0 0 0 1 2.  No real ever runs a whole entry
    ahead of its share: among the first t entries, real i appears fewer
    than t * w_i / sum(w) + 1 times (the picked real's current value was
    the largest of values summing to sum(w), so it stays above -sum(w)).
    """
    weights = _check_weights(weights)
    positive = sum(1 for w in weights if w)
    if (isinstance(max_len, bool) or not isinstance(max_len, int)
            or not max(1, positive) <= max_len <= TABLE_SIZE_MAX):
        raise ConfigError(f"wrr max_len {max_len!r}: expected an integer "
                          f"from {max(1, positive)} (one entry per real with "
                          f"weight > 0) to {TABLE_SIZE_MAX}")
    if not positive:
        return np.array([NO_REAL], dtype=np.uint16)
    weights = _reduce(weights)
    if sum(weights) > max_len:
        weights = _reduce(_scale(weights, max_len))
    return np.array(_smooth_wrr(weights), dtype=np.uint16)


def rr_table(n):
    """Build a round-robin sequence over n reals: 0, 1, ..., n-1.

    The same table as wrr_table([1] * n); [NO_REAL] when n is 0.

    Raises ConfigError unless n is an integer from 0 to 65535.
    """
    if (isinstance(n, bool) or not isinstance(n, int)
            or not 0 <= n <= MAX_REALS):
        raise ConfigError(f"rr number of reals {n!r}: expected an integer "
                          f"from 0 to {MAX_REALS}")
    if n == 0:
        return np.array([NO_REAL], dtype=np.uint16)
    return np.arange(n, dtype=np.uint16)


def _as_list(value, name, what):
    """value as a list, or ConfigError naming it (a string is not one)."""
    if not isinstance(value, (str, bytes)):
        try:
            return list(value)
        except TypeError:
            pass
    raise ConfigError(f"{name} {value!r}: expected a list of {what}")


def _check_weights(weights):
    """Return weights as a list of ints, or raise ConfigError."""
    weights = _as_list(weights, "weights", "integers")
    if len(weights) > MAX_REALS:
        raise ConfigError(f"{len(weights)} reals: expected at most "
                          f"{MAX_REALS}")
    out = []
    for i, w in enumerate(weights):
        if (isinstance(w, (bool, np.bool_))
                or not isinstance(w, (int, np.integer))
                or not 0 <= w <= MAX_WEIGHT):
            raise ConfigError(f"weight[{i}] {w!r}: expected an integer from "
                              f"0 to {MAX_WEIGHT}")
        out.append(int(w))
    return out


def _check_reals(keys, weights):
    """Return (keys, weights) as lists, or raise ConfigError."""
    weights = _check_weights(weights)
    keys = _as_list(keys, "keys", "strings")
    if len(keys) != len(weights):
        raise ConfigError(f"{len(keys)} keys and {len(weights)} weights: "
                          "expected one weight per key")
    seen = {}
    for i, k in enumerate(keys):
        if not isinstance(k, str) or not k:
            raise ConfigError(f"key[{i}] {k!r}: expected a non-empty string "
                              "naming the real, e.g. '10.0.0.11:80'")
        if k in seen:
            raise ConfigError(f"key[{i}] {k!r}: expected unique keys, same "
                              f"as key[{seen[k]}]")
        seen[k] = i
    return keys, weights


def _is_prime(n):
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def _check_maglev_size(size, n_reals):
    if (isinstance(size, bool) or not isinstance(size, int)
            or not n_reals < size <= TABLE_SIZE_MAX or not _is_prime(size)):
        raise ConfigError(f"maglev size {size!r}: expected a prime larger "
                          f"than the number of reals ({n_reals}) and at most "
                          f"{TABLE_SIZE_MAX}, e.g. {MAGLEV_SIZE_DEFAULT}")


def _maglev_permutation(key, size):
    """(offset, skip) of key's permutation; see maglev_table."""
    d = hashlib.blake2b(key.encode("utf-8"), digest_size=16,
                        person=_MAGLEV_PERSON).digest()
    h1 = int.from_bytes(d[:8], "little")
    h2 = int.from_bytes(d[8:], "little")
    return h1 % size, h2 % (size - 1) + 1


def _maglev_turns(weights, size):
    """Real index of each of the first `size` turns of Katran's rounds.

    Real i gets its k-th turn in round ceil(k*W/w_i); turns are ordered by
    round, then by index.  R is the first round after which at least `size`
    turns have been taken.
    """
    w = np.asarray(weights, dtype=np.int64)
    top = int(w.max())
    lo, hi = 1, size            # the heaviest real has a turn every round
    while lo < hi:
        mid = (lo + hi) // 2
        if int((mid * w // top).sum()) >= size:
            hi = mid
        else:
            lo = mid + 1
    count = lo * w // top
    real = np.repeat(np.arange(w.size), count)
    k = np.arange(real.size) - np.repeat(np.cumsum(count) - count, count) + 1
    wr = w[real]
    rnd = (k * top + wr - 1) // wr
    return real[np.lexsort((real, rnd))][:size]


def _reduce(weights):
    g = math.gcd(*weights)
    return [w // g for w in weights]


def _scale(weights, max_len):
    """Weights scaled by T/sum, floored, each positive one kept >= 1."""
    total = sum(weights)

    def fit(t):
        return [max(1, w * t // total) if w else 0 for w in weights]

    # T = max_len - (number of positive weights) always fits.
    lo, hi = max_len - sum(1 for w in weights if w), max_len
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(fit(mid)) <= max_len:
            lo = mid
        else:
            hi = mid - 1
    return fit(lo)


def _smooth_wrr(weights):
    """nginx's smooth weighted round-robin, one cycle of sum(weights) picks.

    Reals of equal weight are picked in index order, so a group of them
    acts as one candidate: its member at position p.  Each group's key is
    current * 2**16 - index, so one argmax picks the largest current value
    and, on a tie, the lowest index.  Cost: one numpy step per entry over
    the distinct weights (at most 362 fit in 65536 entries).
    """
    total = sum(weights)
    groups = {}
    for i, w in enumerate(weights):
        if w:
            groups.setdefault(w, []).append(i)
    members = list(groups.values())
    step = np.array([w << 16 for w in groups], dtype=np.int64)
    key = np.array([-m[0] for m in members], dtype=np.int64)
    pos = [0] * len(members)
    out = [0] * total
    for t in range(total):
        key += step
        g = int(key.argmax())
        m = members[g]
        p = pos[g]
        out[t] = m[p]
        p += 1
        if p == len(m):         # every member of the group picked once more
            p = 0
            key[g] += m[-1] - m[0] - (total << 16)
        else:
            key[g] += m[p - 1] - m[p]
        pos[g] = p
    return out
