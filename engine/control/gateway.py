"""The real servers' gateway follows the active node (NAT with HA).

In NAT the real servers send their replies to their default gateway, the
balancer, which translates them back.  With an active/passive pair that
gateway is an address that moves with the role ([ha] gateway): the active
node holds it on the inside interface (inside_iface, or iface in
one-arm) and announces it (gratuitous ARP; an unsolicited neighbour
advertisement for IPv6), so the real servers' next replies reach it; the
standby one does not hold it.  The kernel answers ARP for it, as for any
address of the node.  The XDP program takes the replies by their source
(the real server's address and port), whatever gateway MAC they were sent
to, so they reach the data plane of whichever node they arrive at.

The address is added with a lifetime (LIFETIME s) that the control thread
renews every REFRESH s: when the engine dies (SIGKILL: nothing of ours
runs), the kernel removes it by itself within LIFETIME s, so the dead
node stops answering ARP for it.  It carries GATEWAY_PROTO as its origin
(IFA_PROTO, as the L7 VIP addresses carry theirs, control.l7.addresses),
so one left behind is removed at the next start.

    gw = Gateway("eth1", ha, lock)     # ha.options.gateway: the addresses
    gw.open(mac)        # at start, in the engine's namespace: leftovers go
    gw.announce()       # active: hold the address, gratuitous ARP
    gw.sync()           # the role's: hold (renewing the lifetime) or drop
    gw.tick()           # from the control thread: sync() every REFRESH s
    gw.close()          # at stop: dropped
"""

import ipaddress
import logging
import time

from .l7.addresses import IFA_F_NODAD, NetlinkAddresses
from ..errors import ConfigError, PyfwdError
from ..neighbours.arp import gratuitous
from ..neighbours.framesocket import FrameSocket
from ..neighbours.ndp import unsolicited_na

__all__ = ["GATEWAY_PROTO", "LIFETIME", "REFRESH", "GatewayAddresses",
           "Gateway"]

log = logging.getLogger("pyfwd")

GATEWAY_PROTO = 0x71    # IFA_PROTO of the gateway addresses ("q")
LIFETIME = 4            # s: the address's valid lifetime in the kernel
REFRESH = 1.0           # s: how often the active node renews it


class GatewayAddresses(NetlinkAddresses):
    """The kernel's side (control.l7.addresses.NetlinkAddresses, reused):
    the gateway addresses, with their prefix, origin GATEWAY_PROTO and a
    lifetime.  PyfwdError naming the interface and the address when the
    kernel refuses."""

    def marked(self):
        """The addresses on the interface marked GATEWAY_PROTO, as
        ip_interface."""
        def dump(ipr, idx):
            return [ipaddress.ip_interface(
                f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}")
                for m in ipr.get_addr(index=idx)
                if m.get_attr("IFA_PROTO") == GATEWAY_PROTO]
        return self._run("reading its addresses", dump)

    def hold(self, address, lifetime):
        """Add `address` (ip_interface), or renew its lifetime."""
        self._run(f"holding gateway address {address}",
                  lambda ipr, idx: ipr.addr(
                      "replace", index=idx, address=str(address.ip),
                      prefixlen=address.network.prefixlen,
                      proto=GATEWAY_PROTO, valid_lft=lifetime,
                      preferred_lft=lifetime,
                      flags=IFA_F_NODAD if address.version == 6 else 0))

    def drop(self, address):
        self._run(f"removing gateway address {address}",
                  lambda ipr, idx: ipr.addr(
                      "del", index=idx, address=str(address.ip),
                      prefixlen=address.network.prefixlen))


class Gateway:
    """The gateway addresses on `iface` following `ha` (a ha.HaState): held
    while active, dropped while standby and at close().

    The addresses are ha.options.gateway (ip_interface objects); with
    some, the Gateway sets itself as ha.gateway (HaState.set_role() and
    tick() call it, HaState.status() shows it); with none, every method
    does nothing.  lock: the engine's (sync, announce and close run under
    it, so no address of the old role stays after a role change returns);
    kernel: a GatewayAddresses or a fake (open, marked, hold, drop,
    close); frames: a callable(iface) -> a socket with send() and close()
    for the announcements.  Counters: holds (netlink adds and renewals),
    announcements (frames sent), drops, errors.
    """

    def __init__(self, iface, ha, lock, *, kernel=None, frames=None,
                 lifetime=LIFETIME, clock=time.monotonic):
        self.iface = iface
        self.addresses = tuple(ha.options.gateway)
        self.ha = ha
        if self.addresses:
            ha.gateway = self
        self.lock = lock
        self.kernel = kernel or GatewayAddresses(iface)
        self._frames = frames or (lambda name: FrameSocket(name,
                                                           ethertype=0))
        self.lifetime = lifetime
        self._clock = clock
        self.sock = self.mac = None
        self.held = False
        self._next = 0.0
        self.counters = dict.fromkeys(("holds", "announcements", "drops",
                                       "errors"), 0)

    def open(self, mac):
        """At start, in the engine's network namespace: remember it, open
        the announcing socket (frames from `mac`, the interface's), and
        remove the gateway addresses a dead pyfwd left (marked
        GATEWAY_PROTO).  ConfigError when a gateway address is on the
        interface unmarked (configured there: both nodes would hold it)."""
        if not self.addresses:
            return
        self.kernel.open()
        try:
            for a in self.kernel.marked():
                log.info("%s: gateway address %s was left by an earlier "
                         "pyfwd: removed", self.iface, a)
                self._drop(a)
            present = self.kernel.present()
            for a in self.addresses:
                if a.ip in present:
                    raise ConfigError(
                        f"ha.gateway = {str(a)!r}: {a.ip} is an address of "
                        f"{self.iface} already, not pyfwd's: the active "
                        "node holds it, so it must be in no interface "
                        "configuration of either node")
            self.sock = self._frames(self.iface)
        except BaseException:
            self.kernel.close()
            raise
        self.mac = mac

    def sync(self):
        """Hold the addresses while active (renewing their lifetime), drop
        them while standby.  PyfwdError when the kernel refuses to add
        one."""
        if not self.addresses or self.sock is None:
            return
        with self.lock:
            if self.ha.active:
                for a in self.addresses:
                    self.kernel.hold(a, self.lifetime)
                    self.counters["holds"] += 1
                if not self.held:
                    log.info("%s: holding gateway address(es) %s",
                             self.iface, self._text())
                self.held = True
            else:
                self._release("standby")

    def announce(self):
        """While active: hold the addresses and announce them (a
        gratuitous ARP, or an unsolicited neighbour advertisement)."""
        if not self.addresses or self.sock is None:
            return
        with self.lock:
            if not self.ha.active:
                return
            self.sync()
            for a in self.addresses:
                self.sock.send(gratuitous(self.mac, a.ip) if a.version == 4
                               else unsolicited_na(self.mac, a.ip))
                self.counters["announcements"] += 1

    def tick(self):
        """From the control thread: sync() every REFRESH s."""
        now = self._clock()
        if now >= self._next:
            self._next = now + REFRESH
            self.sync()

    def close(self):
        """Drop what we hold (idempotent); close the socket."""
        if self.sock is None:
            return
        with self.lock:
            self._release("stop")
            self.sock.close()
            self.sock = None
            self.kernel.close()

    def _release(self, why):
        """Drop the addresses if we hold them."""
        if not self.held:
            return
        self.held = False
        for a in self.addresses:
            self._drop(a)
        log.info("%s: gateway address(es) %s removed (%s)", self.iface,
                 self._text(), why)

    def _drop(self, address):
        """Remove `address`; a failure is logged, not raised: it may have
        gone already (its lifetime, by hand)."""
        try:
            self.kernel.drop(address)
            self.counters["drops"] += 1
        except PyfwdError as exc:
            self.counters["errors"] += 1
            log.warning("%s", exc)

    def _text(self):
        return ", ".join(str(a) for a in self.addresses)

    def status(self):
        """{"iface", "addresses": [text], "held", "lifetime", counters}."""
        return {"iface": self.iface,
                "addresses": [str(a) for a in self.addresses],
                "held": self.held, "lifetime": self.lifetime,
                **self.counters}
