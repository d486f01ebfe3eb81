"""The L7 VIP addresses on the engine's interface: HAProxy binds them, so
they must be local; pyfwd puts there those that are missing and removes
only those it put, once no L7 VIP needs them.

Several L7 VIPs may share an address (80 and 443), an L4 VIP may share it
with an L7 one (the XDP program steers only the L4 VIP's port to the
engine; the kernel, and so HAProxy, gets the rest), and the operator may
have put it there already: that one is left alone, at stop too.

    addrs = InterfaceAddresses("eth0")
    addrs.open()                    # in the engine's network namespace
    addrs.add([vip.address, ...])   # before HAProxy binds them
    addrs.release(keep=[...])       # after HAProxy let the others go
    addrs.close()                   # removes what we added

The addresses pyfwd adds carry ADDR_PROTO as their origin (IFA_PROTO,
Linux 5.18 and later), so one that a pyfwd killed before its stop left
behind is recognised at the next start and removed when no longer needed.
"""

import ipaddress
import logging
import os

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..._netns import in_netns
from ...errors import PyfwdError
from ...neighbours.kernel import ifindex

log = logging.getLogger("pyfwd")

ADDR_PROTO = 0x70       # IFA_PROTO of the addresses pyfwd adds ("p")
IFA_F_NODAD = 0x02      # IPv6: usable at once (HAProxy binds it now)


def _prefixlen(address):
    return 32 if address.version == 4 else 128


class NetlinkAddresses:
    """The kernel's side: one interface's addresses, read and changed in
    the network namespace of the thread that called open() (the
    engine's), whichever thread asks later (a control request, a reload,
    stop).  Each method raises PyfwdError naming the interface and the
    address when the kernel refuses."""

    def __init__(self, iface):
        self.iface = iface
        self._netns_fd = None

    def open(self):
        if self._netns_fd is None:
            self._netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)

    def _run(self, what, fn):
        if self._netns_fd is None:
            raise PyfwdError(f"{self.iface}: {what}: not opened")

        def call():
            with IPRoute() as ipr:
                return fn(ipr, ifindex(ipr, self.iface))
        try:
            return in_netns(self._netns_fd, call)
        except NetlinkError as exc:
            raise PyfwdError(f"{self.iface}: {what}: "
                             f"{os.strerror(exc.code)}") from None
        except OSError as exc:          # setns, or no answer in time
            raise PyfwdError(f"{self.iface}: {what}: {exc}") from None

    def present(self):
        """{address (ip_address): its IFA_PROTO or None} on the interface."""
        def dump(ipr, idx):
            return {ipaddress.ip_address(m.get_attr("IFA_ADDRESS")):
                    m.get_attr("IFA_PROTO")
                    for m in ipr.get_addr(index=idx)}
        return self._run("reading its addresses", dump)

    def add(self, address):
        flags = IFA_F_NODAD if address.version == 6 else 0
        self._run(f"adding L7 VIP address {address}",
                  lambda ipr, idx: ipr.addr(
                      "add", index=idx, address=str(address),
                      prefixlen=_prefixlen(address), proto=ADDR_PROTO,
                      flags=flags))

    def delete(self, address):
        self._run(f"removing L7 VIP address {address}",
                  lambda ipr, idx: ipr.addr(
                      "del", index=idx, address=str(address),
                      prefixlen=_prefixlen(address)))

    def close(self):
        if self._netns_fd is not None:
            os.close(self._netns_fd)
            self._netns_fd = None


class InterfaceAddresses:
    """The bookkeeping (see the module's docstring): which L7 VIP
    addresses pyfwd added (`added`, a set of ip_address), so that it
    removes those and no other.

    kernel: a NetlinkAddresses for iface (or a fake with open, present,
    add, delete, close).  Not thread-safe: L7Sync calls it under the
    engine's lock.
    """

    def __init__(self, iface, kernel=None):
        self.iface = iface
        self.kernel = kernel or NetlinkAddresses(iface)
        self.added = set()
        self._opened = False

    def open(self):
        """Remember the namespace; take back as ours the addresses a pyfwd
        that died left behind (marked ADDR_PROTO)."""
        if self._opened:
            return
        self.kernel.open()
        self._opened = True
        for a, proto in self.kernel.present().items():
            if proto == ADDR_PROTO and a not in self.added:
                log.info("%s: L7 VIP address %s was left by an earlier "
                         "pyfwd: removed when no L7 VIP needs it",
                         self.iface, a)
                self.added.add(a)

    def add(self, addresses):
        """Put on the interface each of `addresses` (ip_address objects,
        repeats allowed) that is not there yet.  PyfwdError when the
        kernel refuses (those added before it stay ours)."""
        want = {ipaddress.ip_address(a) for a in addresses}
        if not want - self.added:
            return
        present = self.kernel.present()
        for a in sorted(want, key=lambda a: (a.version, a)):
            if a in present:
                continue        # the operator's, or ours already
            self.kernel.add(a)
            self.added.add(a)
            log.info("%s: added L7 VIP address %s", self.iface, a)

    def release(self, keep=()):
        """Remove the addresses we added that are not in `keep` (those L7
        VIPs still need).  A failure is logged, not raised: the address
        may be gone already (by hand, or with its namespace)."""
        keep = {ipaddress.ip_address(a) for a in keep}
        for a in sorted(self.added - keep, key=lambda a: (a.version, a)):
            self.added.discard(a)
            try:
                self.kernel.delete(a)
                log.info("%s: removed L7 VIP address %s", self.iface, a)
            except PyfwdError as exc:
                log.warning("%s", exc)

    def close(self):
        """Remove every address we added; forget the namespace
        (idempotent)."""
        if not self._opened:
            return
        self.release()
        self.kernel.close()
        self._opened = False


__all__ = ["ADDR_PROTO", "NetlinkAddresses", "InterfaceAddresses"]
