"""Scheduler tables: Maglev and smooth weighted round-robin.

Reference implementations here are literal transcriptions of Katran's
MaglevHashV2::generateHashRing and nginx's ngx_http_upstream_get_peer, with
the hash as maglev_table's docstring specifies it, so the fast versions in
pyfwd.dataplane.scheduler are checked against the algorithms they claim to be.
"""

import errno
import hashlib
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from pyfwd.dataplane import native as _native
from pyfwd.dataplane import scheduler
from pyfwd.errors import ConfigError, DataplaneError
from pyfwd.dataplane.scheduler import (MAGLEV_SIZE_DEFAULT, NO_REAL, SCHEDULERS,
                             TABLE_SIZE_MAX, build_table, maglev_table,
                             rr_table, wrr_table)


def reals(n, net="10.0.0"):
    return [f"{net}.{i + 1}:80" for i in range(n)]


def by_key(keys, table):
    """The table as real keys (None for NO_REAL), to compare across tables
    whose index lists differ."""
    names = np.array(list(keys) + [None], dtype=object)
    t = table.astype(np.int64)
    t[t == NO_REAL] = len(keys)
    return names[t]


def katran_maglev(keys, weights, size):
    """Katran's MaglevHashV2 loop, with the documented blake2b permutation."""
    perm = []
    for k in keys:
        d = hashlib.blake2b(k.encode(), digest_size=16,
                            person=b"pyfwd-maglev").digest()
        perm.append((int.from_bytes(d[:8], "little") % size,
                     int.from_bytes(d[8:], "little") % (size - 1) + 1))
    result = [-1] * size
    max_weight = max(weights)
    nxt = [0] * len(keys)
    cum = [0] * len(keys)
    runs = 0
    while True:
        for i in range(len(keys)):
            cum[i] += weights[i]
            if cum[i] >= max_weight:
                cum[i] -= max_weight
                offset, skip = perm[i]
                cur = (offset + nxt[i] * skip) % size
                while result[cur] >= 0:
                    nxt[i] += 1
                    cur = (offset + nxt[i] * skip) % size
                result[cur] = i
                nxt[i] += 1
                runs += 1
                if runs == size:
                    return result


def nginx_wrr(weights):
    """nginx's smooth weighted round-robin, one cycle."""
    total = sum(weights)
    current = [0] * len(weights)
    out = []
    for _ in range(total):
        best = None
        for i, w in enumerate(weights):
            if w == 0:
                continue
            current[i] += w
            if best is None or current[i] > current[best]:
                best = i
        current[best] -= total
        out.append(best)
    return out


# ---------------------------------------------------------------- maglev


def test_maglev_is_katrans_algorithm():
    rng = random.Random(7)
    for size in (13, 251, 4093):
        for _ in range(20):
            n = rng.randint(1, min(12, size - 1))
            weights = [rng.choice([0, 1, 1, 2, 3, 7, 100]) for _ in range(n)]
            if not any(weights):
                weights[0] = 1
            keys = reals(n)
            assert maglev_table(keys, weights, size).tolist() == \
                katran_maglev(keys, weights, size), (size, weights)


def test_maglev_pinned():
    # The table must not change between pyfwd versions: during a rolling
    # upgrade old and new nodes share a VIP.  A change here is a flag day.
    keys = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
    assert maglev_table(keys, [1, 1, 1], 13).tolist() == \
        [0, 0, 2, 0, 2, 1, 2, 2, 1, 0, 1, 1, 0]
    table = maglev_table(reals(10), [1, 2, 3, 4, 5, 0, 1, 1, 1, 9])
    assert table.dtype == np.uint16 and table.shape == (MAGLEV_SIZE_DEFAULT,)
    assert hashlib.sha256(table.tobytes()).hexdigest() == \
        "a9b214df2d93555139313ff0e18e7162b81ca06f97de9b38ed8f1c62ec1969fc"


def test_maglev_entries_are_reals_with_weight():
    rng = random.Random(1)
    weights = [rng.choice([0, 1, 5, 9]) for _ in range(50)]
    table = maglev_table(reals(50), weights)
    used = set(np.unique(table).tolist())
    assert NO_REAL not in used
    assert used == {i for i, w in enumerate(weights) if w}
    # A real of weight 1 next to ones of 65535 may get no entry at all, but
    # a real of weight 0 never gets one.
    weights = [rng.choice([0, 1, 65535]) for _ in range(50)]
    used = set(np.unique(maglev_table(reals(50), weights)).tolist())
    assert used and used <= {i for i, w in enumerate(weights) if w}


@pytest.mark.parametrize("n", [1, 2, 7, 10, 100])
def test_maglev_equal_weights_share_within_one_entry(n):
    # Tolerance: every real gets floor(size/n) or ceil(size/n) entries,
    # i.e. its share is 1/n to within 1/size (0.0015 %).
    counts = np.bincount(maglev_table(reals(n), [3] * n), minlength=n)
    assert counts.sum() == MAGLEV_SIZE_DEFAULT
    assert counts.min() >= MAGLEV_SIZE_DEFAULT // n
    assert counts.max() <= -(-MAGLEV_SIZE_DEFAULT // n)


def test_maglev_weights_1_2_3():
    counts = np.bincount(maglev_table(reals(3), [1, 2, 3]), minlength=3)
    ideal = MAGLEV_SIZE_DEFAULT * np.array([1, 2, 3]) / 6
    assert np.abs(counts - ideal).max() <= 2   # 0.02 % of the real's share


def test_maglev_weighted_shares_within_documented_bound():
    # maglev_table: each count within 2 + 2*N*w/sum(w) of size*w/sum(w).
    rng = random.Random(3)
    for size in (1021, 65537):
        for _ in range(10):
            n = rng.randint(2, 40)
            weights = [rng.randint(0, 1000) for _ in range(n)]
            counts = np.bincount(maglev_table(reals(n), weights, size),
                                 minlength=n)
            total = sum(weights)
            for c, w in zip(counts.tolist(), weights):
                assert abs(c - size * w / total) < 2 + 2 * n * w / total, \
                    (size, weights)


def test_maglev_weight_zero_drains_like_removal():
    keys = reals(10)
    weights = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    weights[4] = 0
    drained = maglev_table(keys, weights)
    assert 4 not in drained
    # Same entries, real by real, as a table without that real at all.
    removed = maglev_table(keys[:4] + keys[5:], weights[:4] + weights[5:])
    assert (by_key(keys, drained) == by_key(keys[:4] + keys[5:],
                                            removed)).all()


@pytest.mark.parametrize("keys,weights", [([], []), (reals(3), [0, 0, 0])])
def test_maglev_nothing_to_schedule(keys, weights):
    table = maglev_table(keys, weights, 251)
    assert table.dtype == np.uint16 and len(table) == 251
    assert (table == NO_REAL).all()


def test_maglev_single_real_takes_everything():
    assert (maglev_table(reals(3), [0, 9, 0], 13) == 1).all()


def test_maglev_independent_of_key_order():
    keys, weights = reals(8), [1, 1, 2, 2, 3, 3, 4, 4]
    a = by_key(keys, maglev_table(keys, weights, 4093))
    b = by_key(keys[::-1], maglev_table(keys[::-1], weights[::-1], 4093))
    # Turns go in index order, so a few contested entries may differ
    # (measured 0.64 %).
    assert (a != b).mean() < 0.02


def test_maglev_deterministic_across_processes():
    keys, weights = reals(20), list(range(20))
    table = maglev_table(keys, weights)
    assert (maglev_table(keys, weights) == table).all()
    code = ("import sys; from pyfwd.dataplane.scheduler import maglev_table; "
            f"sys.stdout.write(maglev_table({keys!r}, {weights!r}).tobytes()"
            ".hex())")
    for seed in ("1", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], env=env,
                             capture_output=True, text=True, check=True)
        assert out.stdout == table.tobytes().hex()


def test_maglev_removing_a_real_moves_few_other_entries():
    # Measured: N=10 at most 0.31 % of the survivors' entries move over
    # all ten choices of the removed real (N=100: 0.63 %).  Bound: 1 %.
    n = 10
    keys = reals(n)
    before = by_key(keys, maglev_table(keys, [1] * n))
    for gone in range(n):
        rest = keys[:gone] + keys[gone + 1:]
        after = by_key(rest, maglev_table(rest, [1] * (n - 1)))
        survivors = before != keys[gone]
        assert not (after == keys[gone]).any()
        assert (before[survivors] != after[survivors]).mean() < 0.01


def test_maglev_adding_a_real_moves_about_one_in_n_plus_one():
    # Measured: N=10, 9.27 % of entries move, 9.09 % (= 1/11) to the new
    # real; 0.18-0.36 % between old reals.
    n = 10
    keys = reals(n)
    before = by_key(keys, maglev_table(keys, [1] * n))
    for extra in range(3):
        more = keys + [f"10.0.1.{extra + 1}:80"]
        after = by_key(more, maglev_table(more, [1] * (n + 1)))
        moved = (before != after).mean()
        to_new = (after == more[-1]).mean()
        assert abs(to_new - 1 / (n + 1)) < 1e-4
        assert moved - to_new < 0.01


@pytest.mark.parametrize("size,words", [
    (65536, "65536"),
    (1, "maglev size 1"),
    (0, "maglev size 0"),
    (5, "larger than the number of reals (5)"),    # prime but not > 5 reals
    (4, "maglev size 4"),
    (TABLE_SIZE_MAX + 2, str(TABLE_SIZE_MAX + 2)),  # 131073 is prime
    (True, "True"),
    (65537.0, "65537.0"),
    ("65537", "'65537'"),
])
def test_maglev_bad_size(size, words):
    with pytest.raises(ConfigError) as exc:
        maglev_table(reals(5), [1] * 5, size)
    assert words in str(exc.value)
    assert "prime" in str(exc.value)


def python_fill(size, offsets, skips, turns):
    """maglev_table's fill as it was in Python before pyfwd_maglev_fill:
    each turn's real claims the next free entry of its permutation."""
    table = [NO_REAL] * size
    cur = list(offsets)
    for i in turns:
        c = cur[i]
        while table[c] != NO_REAL:
            c = (c + skips[i]) % size
        table[c] = i
        cur[i] = (c + skips[i]) % size
    return table


@pytest.mark.parametrize("n, size", [(1000, 65537), (100, 65537),
                                     (37, 4093), (12, 13), (1, 2)])
def test_maglev_c_fill_is_the_python_fill(n, size):
    rng = random.Random(n)
    keys = [f"192.168.{i // 250}.{i % 250 + 1}:8080" for i in range(n)]
    for weights in ([1] * n, [rng.choice([0, 1, 2, 3, 7, 100, 65535])
                              for _ in range(n)]):
        weights[0] = weights[0] or 1
        offsets, skips = zip(*(scheduler._maglev_permutation(k, size)
                               for k in keys))
        turns = scheduler._maglev_turns(weights, size).tolist()
        assert maglev_table(keys, weights, size).tolist() == \
            python_fill(size, offsets, skips, turns), weights[:8]


def test_maglev_c_fill_partial_turns_leave_no_real():
    table = _native.maglev_fill(13, [5, 0], [3, 1], [0, 1, 0])
    assert table.tolist() == python_fill(13, [5, 0], [3, 1], [0, 1, 0])
    assert (table == NO_REAL).sum() == 10


@pytest.mark.parametrize("size, offsets, skips, turns", [
    (13, [13], [1], [0]),           # offset out of the table
    (13, [0], [0], [0]),            # skip 0
    (13, [0], [13], [0]),           # skip >= size
    (13, [0], [1], [1]),            # a turn for no real
    (13, [0], [1], [0] * 14),       # more turns than entries
    (12, [0], [2], [0] * 12),       # size not prime: skip 2 cycles
])
def test_maglev_c_fill_refuses(size, offsets, skips, turns):
    with pytest.raises(DataplaneError) as exc:
        _native.maglev_fill(size, offsets, skips, turns)
    assert exc.value.errno == errno.EINVAL


def test_maglev_build_time():
    import time
    keys = reals(100)
    start = time.perf_counter()
    maglev_table(keys, [1] * 100)
    # Measured about 0.005 s; the budget is well under a second.
    assert time.perf_counter() - start < 0.5


# ------------------------------------------------------------------- wrr


def test_wrr_nginx_documented_order():
    # nginx's comment in ngx_http_upstream_round_robin.c: { a, a, b, a, c,
    # a, a } for weights 5, 1, 1.
    assert wrr_table([5, 1, 1]).tolist() == [0, 0, 1, 0, 2, 0, 0]


def test_wrr_is_nginx_algorithm():
    rng = random.Random(11)
    for _ in range(300):
        n = rng.randint(1, 9)
        weights = [rng.choice([0, 1, 2, 3, 4, 5, 7, 10, 13]) for _ in range(n)]
        if not any(weights):
            continue
        g = math.gcd(*weights)
        assert wrr_table(weights).tolist() == \
            nginx_wrr([w // g for w in weights]), weights


def test_wrr_counts_are_reduced_weights():
    table = wrr_table([10, 20, 0, 30])
    assert table.dtype == np.uint16
    assert np.bincount(table, minlength=4).tolist() == [1, 2, 0, 3]


def never_ahead(weights, seq):
    """True if, in every prefix of seq, each real appears fewer than
    t*w/sum + 1 times."""
    total = sum(weights)
    k = [0] * len(weights)
    for t, i in enumerate(seq, 1):
        k[i] += 1
        if total * k[i] >= t * weights[i] + total:
            return False
    return True


def test_wrr_never_a_whole_entry_ahead():
    assert not never_ahead([5, 1, 1], [0, 0, 0, 0, 0, 1, 2])   # bunched
    rng = random.Random(5)
    for _ in range(200):
        weights = [rng.randint(1, 50) for _ in range(rng.randint(1, 6))]
        g = math.gcd(*weights)
        weights = [w // g for w in weights]
        assert never_ahead(weights, wrr_table(weights).tolist()), weights


def test_wrr_heavy_real_runs_are_short():
    table = wrr_table([100, 1]).tolist()
    assert table.count(1) == 1 and len(table) == 101
    # The light real sits in the middle, not at an end.
    assert 40 <= table.index(1) <= 60


@pytest.mark.parametrize("weights", [[], [0], [0, 0, 0]])
def test_wrr_nothing_to_schedule(weights):
    table = wrr_table(weights)
    assert table.dtype == np.uint16 and table.tolist() == [NO_REAL]


@pytest.mark.parametrize("weights,max_len", [
    ([65535, 1, 1000, 30000, 0], 1000),
    ([65535, 65534, 3], 65536),
    ([7919, 7907, 1], 100),
    ([65535] + [1] * 99, 100),       # exactly one entry each
])
def test_wrr_scaled_to_max_len(weights, max_len):
    table = wrr_table(weights, max_len)
    assert len(table) <= max_len
    counts = np.bincount(table, minlength=len(weights))
    positive = sum(1 for w in weights if w)
    total = sum(weights)
    for c, w in zip(counts.tolist(), weights):
        if w == 0:
            assert c == 0
        else:
            assert c >= 1
            assert abs(c - w * len(table) / total) <= 1 + positive * w / total


def test_wrr_large_is_fast_enough():
    import time
    start = time.perf_counter()
    table = wrr_table(list(range(1, 363)), TABLE_SIZE_MAX)  # 362 weights
    assert len(table) == 362 * 363 // 2
    assert time.perf_counter() - start < 2


def test_rr_is_wrr_with_equal_weights():
    for n in (1, 2, 5, 100):
        assert (rr_table(n) == wrr_table([4] * n)).all()
    assert rr_table(0).tolist() == [NO_REAL]
    with pytest.raises(ConfigError, match="65536"):
        rr_table(65536)


@pytest.mark.parametrize("max_len,words", [
    (0, "max_len 0"), (2, "max_len 2"), (TABLE_SIZE_MAX + 1, "131072"),
    (None, "None")])
def test_wrr_bad_max_len(max_len, words):
    with pytest.raises(ConfigError) as exc:
        wrr_table([1, 1, 1], max_len)
    assert words in str(exc.value)


# ------------------------------------------------------ build_table, input


def test_build_table_dispatches():
    keys, weights = reals(4), [1, 2, 3, 4]
    assert SCHEDULERS == ("maglev", "wrr")
    assert (build_table("maglev", keys, weights)
            == maglev_table(keys, weights)).all()
    assert (build_table("wrr", keys, weights) == wrr_table(weights)).all()
    with pytest.raises(ConfigError) as exc:
        build_table("lc", keys, weights)
    assert "'lc'" in str(exc.value) and "maglev, wrr" in str(exc.value)
    with pytest.raises(ConfigError, match="key\\[1\\]"):
        build_table("wrr", ["a:1", "a:1"], [1, 1])


@pytest.mark.parametrize("keys,weights,words", [
    (["a:1", "b:1"], [1, -1], "weight[1] -1"),
    (["a:1", "b:1"], [1, 65536], "weight[1] 65536"),
    (["a:1", "b:1"], [True, 1], "weight[0] True"),
    (["a:1", "b:1"], [1, 1.0], "weight[1] 1.0"),
    (["a:1", "b:1"], [1, "2"], "weight[1] '2'"),
    (["a:1", "b:1"], 5, "weights 5"),
    (["a:1", "b:1"], "11", "weights '11'"),
    (["a:1", "b:1"], [1], "2 keys and 1 weights"),
    (["a:1", ""], [1, 1], "key[1] ''"),
    (["a:1", None], [1, 1], "key[1] None"),
    (["a:1", b"b:1"], [1, 1], "key[1] b'b:1'"),
    (["a:1", "b:1", "a:1"], [1, 1, 1], "key[2] 'a:1'"),
    ("ab", [1, 1], "keys 'ab'"),
])
def test_bad_reals_are_named(keys, weights, words):
    with pytest.raises(ConfigError) as exc:
        maglev_table(keys, weights, 13)
    assert words in str(exc.value)


def test_numpy_weights_are_accepted():
    weights = np.array([1, 2, 3], dtype=np.int32)
    assert (maglev_table(reals(3), weights, 13)
            == maglev_table(reals(3), [1, 2, 3], 13)).all()
    with pytest.raises(ConfigError, match="weight\\[0\\]"):
        wrr_table(np.array([True, False]))


def test_too_many_reals():
    with pytest.raises(ConfigError, match="65536 reals"):
        wrr_table([1] * 65536)


def test_sh_sends_a_client_to_one_real_on_every_vip_of_those_hosts():
    # A PACS's DICOM VIP (:104) and web VIP (:80 -> :8042) over the same
    # archive nodes: a study stored through one is fetched through the other
    from pyfwd.model import Real, Vip
    from pyfwd.dataplane.tables import ring_for
    from pyfwd.model import Service

    hosts = ["10.0.0.11", "10.0.0.12", "10.0.0.13"]

    def vip(scheduler, port, real_port):
        return Service(Vip.parse(f"10.0.0.100:{port}/tcp"),
                       [Real.parse(f"{h}:{real_port}") for h in hosts],
                       scheduler, "nat")

    one = [1, 1, 1]
    assert (ring_for(vip("sh", 104, 104), one) ==
            ring_for(vip("sh", 80, 8042), one)).all()
    # maglev names reals with their ports: its tables differ per VIP
    assert (ring_for(vip("maglev", 104, 104), one) !=
            ring_for(vip("maglev", 80, 8042), one)).any()
    # one host twice (two ports) in a VIP: full names, both still used
    twice = Service(Vip.parse("10.0.0.100:104/tcp"),
                    [Real.parse("10.0.0.11:104"),
                     Real.parse("10.0.0.11:11112")], "sh", "nat")
    assert sorted(set(ring_for(twice, [1, 1]).tolist())) == [0, 1]
