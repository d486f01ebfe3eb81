"""A SYN flood from spoofed sources inside a lab, and what a legitimate
client sees meanwhile (issue 17, point 2; docs/reliability/flood.md).

- ``SynFlood``: TCP SYNs to VIP:PORT from random sources of a private
  range, at a steady rate, from a packet socket.  The frames are built
  once; each SYN changes only its source address, port and sequence
  number, and both checksums are updated from precomputed sums.  It
  refuses to run in the machine's own network namespace and refuses
  sources that are not private addresses.
- ``Attacker``: a namespace plugged into a lab segment (beside the
  client), with routes on that segment's other hosts that send the
  spoofed range back to it.  The reals' answers (DR) and the balancer's
  translated SYN-ACKs (NAT) go there and are dropped: the namespace owns
  none of those addresses and does not forward.  Nothing leaves the lab.
- ``LegitClient``: HTTP requests at a steady rate, each on a new
  connection, from a namespace; every request's start, outcome and time.
- ``FlowSampler``: the engine's flow counters over its control socket,
  sampled at a steady rate.

As a program, inside a namespace you made (never the machine's own)::

    ip netns exec NS python -m pyfwd.lab.flood --iface eth0 \\
        --vip 10.0.0.100:80 --dst-mac 02:00:00:00:01:02 \\
        --sources 10.99.0.0/16 --rate 5000 --duration 15
"""

import argparse
import ipaddress
import json
import os
import random
import socket
import struct
import threading
import time
from typing import Callable, Optional

from pyroute2.netlink.exceptions import NetlinkError

from ..control.server import request
from ..errors import LabError
from ..frames import mac_to_bytes
from .namespaces import (create_netns, in_netns, iproute, open_netns,
                         remove_netns)

__all__ = ["SynFlood", "Attacker", "LegitClient", "FlowSampler",
           "DEFAULT_SOURCES", "main"]

DEFAULT_SOURCES = "10.99.0.0/16"
ATTACKER_HOST = 200             # the attacker's host number on its segment
_TICK = 0.002                   # s between bursts
_MAX_BURST = 512                # frames sent back to back at most


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _sum16(data: bytes) -> int:
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


_INIT_NET_INODE = 0xEFFFFFF9    # the initial namespace's (PROC_NET_INIT_INO)


def _in_own_namespace() -> bool:
    """True if the calling thread is in the machine's own network namespace
    (where eth0 is): the initial one, or PID 1's or our parent's (when they
    can be read)."""
    try:
        here = os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:
        return True                     # cannot tell: assume the worst
    for pid in (1, os.getppid()):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == here:
                return True
        except OSError:
            pass
    return here == _INIT_NET_INODE


class SynFlood:
    """SYNs to ``vip``:``port`` from random sources of ``sources`` (a
    private IPv4 range), sent on ``iface`` as Ethernet frames from
    ``src_mac`` to ``dst_mac`` (the balancer's).

    ``run(rate, duration)`` sends them; it must be called from a thread in
    a namespace you made.  LabError for a public source range, or when
    called in the machine's own namespace.
    """

    def __init__(self, iface: str, vip: str, port: int, dst_mac: str,
                 src_mac: str, sources: str = DEFAULT_SOURCES,
                 seed: Optional[int] = None):
        net = ipaddress.ip_network(sources)
        if net.version != 4 or not net.is_private or net.num_addresses < 2:
            raise LabError(f"flood sources {sources}: expected a private "
                           f"IPv4 range (inside the lab), /30 or larger")
        self.iface, self.port, self.sources = iface, port, net
        self._rand = random.Random(seed)
        self._base = int(net.network_address)
        self._hosts = net.num_addresses
        dst = ipaddress.IPv4Address(vip).packed
        eth = mac_to_bytes(dst_mac) + mac_to_bytes(src_mac) + b"\x08\x00"
        # IPv4: 44 bytes, DF, TTL 64, TCP; source and checksum left 0
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 44, 0, 0x4000, 64, 6, 0,
                         bytes(4), dst)
        # TCP: source port and sequence left 0, SYN, window 64240, MSS 1460
        tcp = struct.pack("!HHIIBBHHH", 0, port, 0, 0, 6 << 4, 0x02, 64240,
                          0, 0) + b"\x02\x04\x05\xb4"
        self._frame = bytearray(eth + ip + tcp)
        self._ip_sum = _sum16(ip)
        # pseudo header (source left out) + header
        self._tcp_sum = _sum16(dst) + 6 + len(tcp) + _sum16(tcp)
        self.sent = self.errors = 0
        self.elapsed = 0.0

    def _next(self) -> bytearray:
        r = self._rand.getrandbits(64)
        src = self._base + (r & 0xFFFFFFFF) % self._hosts
        sport = 1024 + (r >> 32 & 0xFFFF) % 64512
        seq = r >> 16 & 0xFFFFFFFF
        s = (src >> 16) + (src & 0xFFFF)
        f = self._frame
        struct.pack_into("!HI", f, 24, 0xFFFF - _fold(self._ip_sum + s), src)
        struct.pack_into("!HHI", f, 34, sport, self.port, seq)
        struct.pack_into("!H", f, 50, 0xFFFF - _fold(
            self._tcp_sum + s + sport + (seq >> 16) + (seq & 0xFFFF)))
        return f

    def run(self, rate: float, duration: float,
            stop: Optional[threading.Event] = None) -> dict:
        """Send `rate` SYNs a second for `duration` seconds (or until
        `stop` is set), paced in short bursts; report() after."""
        if _in_own_namespace():
            raise LabError("the flood runs only in a namespace you made, "
                           "never in the machine's own")
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.bind((self.iface, 0))
            t0 = time.monotonic()
            end = t0 + duration
            while not (stop and stop.is_set()):
                now = time.monotonic()
                if now >= end:
                    break
                due = min(int((now - t0) * rate) - self.sent, _MAX_BURST)
                for _ in range(due):
                    try:
                        sock.send(self._next())
                    except OSError:     # ENOBUFS: the queue is full
                        self.errors += 1
                    self.sent += 1
                time.sleep(_TICK)
            self.elapsed = time.monotonic() - t0
        finally:
            sock.close()
        return self.report()

    def report(self) -> dict:
        """{"sent", "errors", "seconds", "rate"} of the last run()."""
        return {"sent": self.sent, "errors": self.errors,
                "seconds": round(self.elapsed, 3),
                "rate": round(self.sent / self.elapsed) if self.elapsed
                else 0}


class Attacker:
    """A namespace ``<lab>-attacker`` on the segment of ``lab``'s client,
    address ``.200`` of it, whose ``eth0`` sends the flood; routes
    ``sources`` to it on the segment's other hosts (not the client).

    A context manager: builds on enter, removes the namespace (and what
    runs in it) on exit.  The namespace carries no lab marker: the lab's
    own down() leaves it, this object's close() removes it.
    """

    def __init__(self, lab, sources: str = DEFAULT_SOURCES):
        self.lab, self.sources = lab, sources
        self.namespace = f"{lab.name}-attacker"
        iface = lab.node("client").interface("eth0")
        self.switch = iface.switch
        seg = ipaddress.ip_interface(iface.ipv4).network
        self.address = str(seg.network_address + ATTACKER_HOST)
        self.prefixlen = seg.prefixlen
        self.mac = None

    def up(self) -> "Attacker":
        try:
            create_netns(self.namespace, f"pyfwd-flood:{self.lab.name}",
                         {"net.ipv4.ip_forward": 0,
                          "net.ipv4.conf.all.rp_filter": 0})
            self._wire()
        except BaseException:
            self.close()
            raise
        return self

    def _wire(self):
        switch_ns = self.lab.ns(self.switch)
        with iproute(self.namespace) as ipr:
            fd = open_netns(switch_ns)
            try:
                ipr.link("add", ifname="eth0", kind="veth",
                         peer={"ifname": "attacker", "net_ns_fd": fd})
            finally:
                os.close(fd)
            with iproute(switch_ns) as sw:
                bridge, = sw.link_lookup(ifname="br0")
                sw.link("set", ifname="attacker", master=bridge, state="up")
            index, = ipr.link_lookup(ifname="eth0")
            ipr.addr("add", index=index, address=self.address,
                     prefixlen=self.prefixlen)
            ipr.link("set", index=index, state="up")
            self.mac = ipr.link("get", index=index)[0].get("IFLA_ADDRESS")
        for node in self.lab.plan().hosts:
            on_segment = any(i.switch == self.switch for i in node.interfaces)
            if node.role != "client" and on_segment:
                with iproute(node.namespace) as ipr:
                    try:
                        ipr.route("add", dst=self.sources,
                                  gateway=self.address)
                    except NetlinkError as exc:
                        raise LabError(f"route {self.sources} via "
                                       f"{self.address} on {node.role}: "
                                       f"{exc}") from None

    def close(self) -> None:
        """Remove the namespace and what runs in it (the routes to it on
        the lab's hosts stay, unreachable, until the lab goes).
        Idempotent."""
        remove_netns([self.namespace])

    def __enter__(self) -> "Attacker":
        return self.up()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def flood(self, vip: str, port: int, dst_mac: str, **kw) -> SynFlood:
        """A SynFlood from this attacker's eth0 and sources."""
        return SynFlood("eth0", vip, port, dst_mac, self.mac,
                        self.sources, **kw)

    def run(self, flood: SynFlood, rate: float, duration: float) -> dict:
        """flood.run() in a thread inside this namespace; its report."""
        return in_netns(self.namespace, lambda: flood.run(rate, duration),
                        timeout=duration + 30)


class LegitClient:
    """HTTP GETs of ``url_path`` at ``vip``:``port``, ``rate`` a second,
    each on a new connection made by ``make_socket()`` (a socket in the
    client's namespace), each given ``timeout`` seconds in all.  A request
    succeeds on an answer that begins "HTTP/1.x 200".

    start() / stop(); ``results``: [(start, ok, seconds, error)], start
    on time.monotonic().
    """

    def __init__(self, make_socket: Callable[[], socket.socket], vip: str,
                 port: int = 80, rate: float = 20.0, timeout: float = 3.0,
                 url_path: str = "/"):
        self.make_socket, self.addr = make_socket, (vip, port)
        self.rate, self.timeout = rate, timeout
        self.request = (f"GET {url_path} HTTP/1.1\r\nHost: {vip}\r\n"
                        "Connection: close\r\n\r\n").encode()
        self.results = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []

    def _one(self, t0: float) -> None:
        ok, err = False, ""
        sock = None
        try:
            sock = self.make_socket()
            sock.settimeout(self.timeout)
            sock.connect(self.addr)
            sock.sendall(self.request)
            data = b""
            while True:
                left = t0 + self.timeout - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out")
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            ok = data.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
            err = "" if ok else data[:40].decode(errors="replace")
        except OSError as exc:
            err = type(exc).__name__ + (f" {exc.strerror}" if
                                        exc.strerror else "")
        except Exception as exc:        # noqa: BLE001 - counted, not raised
            err = f"{type(exc).__name__} {exc}"
        finally:
            if sock is not None:
                sock.close()
        with self._lock:
            self.results.append((t0, ok, time.monotonic() - t0, err))

    def _loop(self) -> None:
        t0, n = time.monotonic(), 0
        while not self._stop.is_set():
            due = t0 + n / self.rate
            if self._stop.wait(max(0.0, due - time.monotonic())):
                break
            t = threading.Thread(target=self._one, args=(time.monotonic(),),
                                 daemon=True)
            t.start()
            self._threads.append(t)
            n += 1

    def start(self) -> "LegitClient":
        self._main = threading.Thread(target=self._loop, daemon=True)
        self._main.start()
        return self

    def stop(self) -> list:
        """Stop making requests, wait for those under way; the results."""
        self._stop.set()
        self._main.join()
        for t in self._threads:
            t.join(self.timeout + 5)
        return sorted(self.results)

    @staticmethod
    def summary(results, t_from: float, t_to: float) -> dict:
        """{"requests", "ok", "rate" (%), "slow" (over 0.5 s), "p50_ms",
        "max_ms", "errors": {error: n}} of the requests started in
        [t_from, t_to)."""
        sel = [r for r in results if t_from <= r[0] < t_to]
        ok = [r for r in sel if r[1]]
        lat = sorted(r[2] * 1000 for r in ok)
        errors = {}
        for r in sel:
            if not r[1]:
                errors[r[3]] = errors.get(r[3], 0) + 1
        return {"requests": len(sel), "ok": len(ok),
                "rate": round(100.0 * len(ok) / len(sel), 2) if sel else 0.0,
                "slow": sum(1 for x in lat if x > 500),
                "p50_ms": round(lat[len(lat) // 2], 1) if lat else None,
                "max_ms": round(lat[-1], 1) if lat else None,
                "errors": errors}


class FlowSampler:
    """The engine's flow counters, read from its control socket `path`
    every `interval` seconds: ``samples`` [(t, {counter: value})], t on
    time.monotonic().  Counters: flows_half_open, flows (the per-real
    `active` summed), flows_new, flows_evicted, flows_expired,
    flows_bypassed, and the drop reasons `keep_reasons`."""

    def __init__(self, path: str, interval: float = 0.5,
                 keep_reasons=("drop_table_full", "drop_ports_full")):
        self.path, self.interval = path, interval
        self.keep_reasons = keep_reasons
        self.samples = []
        self._stop = threading.Event()

    def read(self) -> dict:
        s = request(self.path, "stats")
        core = s["core"]
        out = {k: core.get(k, 0) for k in (
            "flows_half_open", "flows_new", "flows_evicted",
            "flows_expired", "flows_bypassed")}
        out["flows"] = sum(r.get("active", 0) + r.get("inactive", 0)
                           for v in s.get("vips", [])
                           for r in v.get("reals", []))    # closing too
        reasons = core.get("reason") or {}
        for k in self.keep_reasons:
            out[k] = reasons.get(k, 0)
        return out

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                self.samples.append((t, self.read()))
            except Exception:           # noqa: BLE001 - a missed sample
                pass
            self._stop.wait(max(0.0, t + self.interval - time.monotonic()))

    def start(self) -> "FlowSampler":
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list:
        self._stop.set()
        self._thread.join(self.interval + 10)
        return list(self.samples)


def main(argv=None) -> int:
    """`python -m pyfwd.lab.flood`: a SYN flood from this namespace."""
    p = argparse.ArgumentParser(prog="python -m pyfwd.lab.flood",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--iface", required=True)
    p.add_argument("--vip", required=True, help="ADDR:PORT")
    p.add_argument("--dst-mac", required=True,
                   help="the balancer's MAC on --iface's segment")
    p.add_argument("--sources", default=DEFAULT_SOURCES,
                   help="a private range routed back into your lab")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--duration", type=float, default=15.0)
    a = p.parse_args(argv)
    addr, _, port = a.vip.rpartition(":")
    with open(f"/sys/class/net/{a.iface}/address") as f:
        src_mac = f.read().strip()
    try:
        flood = SynFlood(a.iface, addr, int(port), a.dst_mac, src_mac,
                         a.sources)
        print(json.dumps(flood.run(a.rate, a.duration)))
    except LabError as exc:
        p.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
