"""The rows of `pyfwd bench`'s packet-rate and HTTP parts, one line each,
in the order they run (pure: no root, nothing run).

Adding a row is adding a line: a packet-rate row names its forwarder (a
reference, or `pyfwd start` with a mode, a backend and extra arguments),
the interface its sink counts on and the forwarder's XDP interfaces; an
HTTP row names its balancer (BALANCERS: the lab it runs in and how it is
started), the response size and whether wrk keeps its connections open.
For example, the XDP fast path's rows (issue 18) are::

    PpsRow("dr-fastpath", "xdp-kernel", "pyfwd", "G0", ("L0",), "dr",
           "xdp", ("--fastpath", "xdp")),
    Balancer("nat-fastpath", "two-arm", "pyfwd", "nat",
             ("--fastpath", "xdp")),

Reference and pyfwd rows are interleaved, each pyfwd row right after the
reference it is compared with, and each repeat runs them in the other
direction (run.serpentine), so a slow minute on a shared machine falls on
a row and its reference alike.
"""

from dataclasses import dataclass

__all__ = ["PpsRow", "PPS", "PPS_ROWS", "PPS_REFS", "Balancer",
           "BALANCERS", "HttpRow", "HTTP", "HTTP_ROWS", "HTTP_MODES",
           "HTTP_SIZES", "HTTP_RUN_ORDER", "pps_row", "http_row",
           "balancer_order"]


@dataclass(frozen=True)
class PpsRow:
    """A packet-rate row: ``ref`` the reference its ratio is judged
    against (None: it is a reference); ``kind`` the forwarder ("sink":
    none, the generator's ceiling; "xdp-kernel": XDP_TX MAC swap;
    "xsk-minimal": bench/xsk_minimal.c; "kernel-nat": nftables DNAT;
    "pyfwd": `pyfwd start`); ``sink`` the interface the delivered frames
    are counted on; ``xdp`` the forwarder's XDP interfaces (their NAPI
    threaded on the forwarder's CPU); for pyfwd its ``mode``, ``backend``
    and ``extra`` arguments."""
    name: str
    ref: object
    kind: str
    sink: str
    xdp: tuple = ()
    mode: str = ""
    backend: str = ""
    extra: tuple = ()

    @property
    def af_xdp(self) -> bool:
        """An AF_XDP loop forwards (it busy-polls)."""
        return self.kind == "xsk-minimal" or self.backend == "xdp"

    @property
    def steering(self) -> str:
        """Where its receive work runs, in words."""
        ifs = " and ".join(self.xdp or ("L0",))
        if not self.xdp:
            return f"RPS of {ifs} to CPU 1"
        words = f"threaded NAPI of {ifs} on CPU 1"
        if self.af_xdp:
            words += ", preferred busy polling set on the " + (
                "loop's" if self.kind == "xsk-minimal" else "engine's") + \
                " socket (whether it engaged: observe)"
        return words


# name, compared with, forwarder, sink, XDP on, pyfwd mode, backend, extra
PPS = (
    PpsRow("generator", None, "sink", "L0", ("L0",)),
    PpsRow("xsk-minimal", None, "xsk-minimal", "G0", ("L0",)),
    PpsRow("dr-xdp", "xsk-minimal", "pyfwd", "G0", ("L0",), "dr", "xdp"),
    PpsRow("snat-xdp", "xsk-minimal", "pyfwd", "G0", ("L0",), "snat",
           "xdp"),
    PpsRow("xdp-kernel", None, "xdp-kernel", "G0", ("L0",)),
    PpsRow("dr-afpacket", "xdp-kernel", "pyfwd", "G0", (), "dr",
           "afpacket"),
    PpsRow("kernel-nat", None, "kernel-nat", "G1"),
    PpsRow("nat-xdp", "kernel-nat", "pyfwd", "G1", ("L0", "L1"), "nat",
           "xdp"),
    # the XDP fast path (docs/fastpath.md): established flows sent by XDP
    PpsRow("dr-fastpath", "xdp-kernel", "pyfwd", "G0", ("L0",), "dr", "xdp",
           ("--fastpath", "xdp")),
    PpsRow("snat-fastpath", "xdp-kernel", "pyfwd", "G0", ("L0",), "snat",
           "xdp", ("--fastpath", "xdp")),
    PpsRow("nat-fastpath", "kernel-nat", "pyfwd", "G1", ("L0", "L1"), "nat",
           "xdp", ("--fastpath", "xdp")),
)
PPS_ROWS = tuple(r.name for r in PPS)
PPS_REFS = tuple(r.name for r in PPS if r.ref is None and r.kind != "sink")


@dataclass(frozen=True)
class Balancer:
    """How an HTTP row's balancer runs: ``lab`` "one-arm" or "two-arm"
    (the balancer is the reals' gateway); ``kind`` "pyfwd", "kernel-nat"
    or "haproxy"; for pyfwd its ``mode`` and ``extra`` arguments of
    `pyfwd start`, for HAProxy its mode (tcp, http)."""
    name: str
    lab: str
    kind: str
    mode: str = ""
    extra: tuple = ()


# name, lab, kind, mode, extra arguments
BALANCERS = {b.name: b for b in (
    Balancer("dr", "one-arm", "pyfwd", "dr"),
    Balancer("nat", "two-arm", "pyfwd", "nat"),
    # NAT with the loop's other ways of waiting (`--poll`, docs/bench.md's
    # benchmark notes): its CPU per request against the wake-up mode's
    Balancer("nat-busy", "two-arm", "pyfwd", "nat",
             ("--busy-poll", "20", "--poll", "busy")),
    Balancer("nat-adaptive", "two-arm", "pyfwd", "nat",
             ("--busy-poll", "20", "--poll", "adaptive")),
    # NAT with the XDP fast path (docs/fastpath.md) and the engine's
    # default poll mode: established flows rewritten and redirected in
    # XDP, the loop sees only new flows; the switch ports facing the
    # balancer run a pass-all XDP program (veth hands XDP's frames only
    # to a peer with one: dataplane.vethpeer)
    Balancer("nat-fastpath", "two-arm", "pyfwd", "nat",
             ("--busy-poll", "20", "--poll", "adaptive",
              "--fastpath", "xdp")),
    Balancer("snat", "one-arm", "pyfwd", "snat"),
    Balancer("kernel-nat", "two-arm", "kernel-nat"),
    # the kernel's NAT on veths that behave as a NIC's ports (MTU frames
    # in, GRO in NAPI: bench.balancers._wire), the reference an XDP path
    # can be held to: on plain veths the kernel forwards 64 KB segments
    Balancer("kernel-nat-wire", "two-arm", "kernel-nat", extra=("wire",)),
    Balancer("haproxy-tcp", "one-arm", "haproxy", "tcp"),
    Balancer("haproxy-http", "one-arm", "haproxy", "http"),
)}
# the HTTP tables' order (results.md)
HTTP_MODES = tuple(BALANCERS)
HTTP_SIZES = ("1k", "100k", "1m")
CONNECTIONS = ("keep-alive", "close")


@dataclass(frozen=True)
class HttpRow:
    """An HTTP row: wrk through ``balancer`` for /``size``; ``conn``
    "keep-alive" (wrk's connections carry request after request) or
    "close" (Connection: close, a new connection per request: every
    request opens and closes a flow); ``ref`` the row whose balancer CPU
    per request it is compared with."""
    name: str
    balancer: str
    size: str
    conn: str = "keep-alive"
    ref: str = ""


def _ka(balancer: str, size: str, ref: str = "kernel-nat") -> HttpRow:
    return HttpRow(f"http-{balancer}-{size}", balancer, size,
                   ref=f"http-{ref}-{size}")


def _close(balancer: str, size: str) -> HttpRow:
    return HttpRow(f"http-{balancer}-close-{size}", balancer, size,
                   "close", ref=f"http-kernel-nat-close-{size}")


HTTP = tuple(_ka(b, s) for b in HTTP_MODES for s in HTTP_SIZES) + (
    _close("nat", "1k"), _close("kernel-nat", "1k"),
    _close("nat", "100k"), _close("kernel-nat", "100k"),
    _close("nat-busy", "1k"), _close("nat-busy", "100k"),
    _close("nat-adaptive", "1k"), _close("nat-adaptive", "100k"),
    _close("nat-fastpath", "1k"), _close("nat-fastpath", "100k"),
    _close("kernel-nat-wire", "1k"), _close("kernel-nat-wire", "100k"),
)
# The balancers' run order, interleaved: each pyfwd balancer next to the
# reference it is compared with (nat with kernel-nat, dr and snat with
# HAProxy in TCP mode).  A balancer missing here runs last.
HTTP_RUN_ORDER = ("kernel-nat", "nat", "nat-busy", "nat-adaptive",
                  "nat-fastpath", "kernel-nat-wire", "haproxy-tcp", "dr", "snat", "haproxy-http")
HTTP_ROWS = tuple(r.name for r in HTTP)

_PPS = {r.name: r for r in PPS}
_HTTP = {r.name: r for r in HTTP}


def pps_row(name: str) -> PpsRow:
    """The packet-rate row ``name``; KeyError if there is none."""
    return _PPS[name]


def http_row(name: str) -> HttpRow:
    """The HTTP row ``name``; KeyError if there is none."""
    return _HTTP[name]


def balancer_order(names) -> list:
    """The balancers of the HTTP rows ``names``, in run order."""
    wanted = {http_row(n).balancer for n in names}
    rank = {b: i for i, b in enumerate(HTTP_RUN_ORDER)}
    return sorted(wanted, key=lambda b: (rank.get(b, len(rank)),
                                         HTTP_MODES.index(b)))
