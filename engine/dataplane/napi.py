"""What preferred busy polling wants of an interface, set by the engine
that busy-polls and put back when it stops.

With SO_PREFER_BUSY_POLL the loop's recvfrom()/sendto() do the NAPI work
on the loop's core; for the kernel to leave that work to it, the
interface defers its hard IRQs (napi_defer_hard_irqs: how many empty
NAPI polls before they are re-armed) and re-arms them after
gro_flush_timeout ns if the loop stops polling (an adaptive loop that
went to sleep in poll(): the first frame then waits that long).  Both are
per interface in sysfs; `NapiTuning` writes them and remembers what was
there, and restore() writes that back.

/sys/class/net shows the devices of the network namespace that mounted
it, not the calling thread's: an engine whose thread entered a namespace
by setns(2) (the tests', the lab's) would find another namespace's device
of the same name there.  So the device is checked first (same ifindex and
MAC as the socket calls of this thread see); when it does not match,
nothing is written and the warning says how to set them by hand.

    tuning = NapiTuning()
    tuning.apply("eth0")        # True if set
    ...
    tuning.restore()

busy_poll_state() says, from the sockets' NAPI ids, whether busy polling
engages at all.  When it cannot (veth, AF_XDP copy mode) the settings
stay: with nobody busy polling they work as interrupt coalescing, the
NAPI thread handling a batch per gro_flush_timeout instead of a wake-up
per frame, which measured less CPU per request and no worse latency for
the NAT HTTP rows (docs/bench.md, "Waiting for frames").
"""

import fcntl
import logging
import os
import socket
import struct

log = logging.getLogger("pyfwd")

SYSFS_NET = "/sys/class/net"
DEFER_HARD_IRQS = 2             # as bench/ and the kernel's busy-poll docs
GRO_FLUSH_TIMEOUT_NS = 200_000  # 200 µs
_SIOCGIFHWADDR = 0x8927


def _mac(ifname):
    """The MAC of ifname in the calling thread's namespace, as sysfs writes
    it (aa:bb:...); None if it cannot be read."""
    ifr = struct.pack("256s", ifname.encode()[:15])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            out = fcntl.ioctl(s.fileno(), _SIOCGIFHWADDR, ifr)
    except OSError:
        return None
    return ":".join(f"{b:02x}" for b in out[18:24])


class NapiTuning:
    """napi_defer_hard_irqs and gro_flush_timeout of the interfaces an
    engine busy-polls on (see the module's docstring).  root: the sysfs
    directory of the devices (tests give another); saved: {iface: {file:
    the value that was there}} of those set."""

    FILES = ("napi_defer_hard_irqs", "gro_flush_timeout")

    def __init__(self, root=SYSFS_NET, *, mac=_mac, ifindex=None):
        self.root = root
        self._mac = mac
        self._ifindex = ifindex or socket.if_nametoindex
        self.saved = {}

    def apply(self, iface, defer=DEFER_HARD_IRQS,
              flush_ns=GRO_FLUSH_TIMEOUT_NS):
        """Set both on iface; True if set, False (logged) if its sysfs
        directory is not this namespace's iface or refuses the values."""
        d = os.path.join(self.root, iface)
        values = dict(zip(self.FILES, (defer, flush_ns)))
        why = self._not_ours(iface, d)
        if why is None:
            try:
                old = {f: self._read(d, f) for f in self.FILES}
                for f, v in values.items():
                    self._write(d, f, v)
                self.saved[iface] = old
                log.info("%s: napi_defer_hard_irqs %d, gro_flush_timeout "
                         "%d ns while busy polling (were %s, %s)", iface,
                         defer, flush_ns, *old.values())
                return True
            except OSError as exc:
                if iface in self.saved:
                    self._put_back(iface)
                why = str(exc)
        log.warning("%s: napi_defer_hard_irqs and gro_flush_timeout not set "
                    "(%s); busy polling works better with them: echo %d > "
                    "%s/napi_defer_hard_irqs; echo %d > %s/gro_flush_timeout",
                    iface, why, defer, d, flush_ns, d)
        return False

    def restore(self):
        """Write back what apply() found (errors logged); idempotent."""
        for iface in list(self.saved):
            self._put_back(iface)

    def _put_back(self, iface):
        d = os.path.join(self.root, iface)
        for f, v in self.saved.pop(iface).items():
            try:
                self._write(d, f, v)
            except OSError as exc:
                log.warning("%s: %s not restored to %s: %s", iface, f, v,
                            exc)

    def _not_ours(self, iface, d):
        """None if d is the sysfs directory of this namespace's iface, else
        why not."""
        try:
            index = int(self._read(d, "ifindex"))
            mac = self._read(d, "address")
        except (OSError, ValueError):
            return f"no {d}"
        try:
            mine = self._ifindex(iface)
        except OSError:
            return f"no {iface} here"
        if index != mine or mac != self._mac(iface):
            return (f"{self.root} shows another network namespace's "
                    f"{iface}")
        return None

    @staticmethod
    def _read(d, name):
        with open(os.path.join(d, name)) as f:
            return f.read().strip()

    @staticmethod
    def _write(d, name, value):
        with open(os.path.join(d, name), "w") as f:
            f.write(f"{value}\n")


# busy_poll_state()'s answers
BUSY_POLL_STATES = ("off", "waiting", "engaged", "not engaged")


def busy_poll_state(asked, napi_ids):
    """Whether an AF_XDP loop's busy polls do anything, from what its
    sockets say.  A busy poll drives the NAPI whose id the socket holds
    (SO_INCOMING_NAPI_ID); a socket with none (copy mode since Linux 6.13,
    so veth always) polls nothing, and the loop then sleeps in poll() when
    idle instead of spinning (csrc/io/xsk_loop.c).

    asked: whether the socket options took (XskInfo.busy_poll); napi_ids:
    each socket's id as the loop found it, None where not known yet (no
    frame received).  Returns "off" (not asked), "engaged" (some socket
    has a NAPI id: the loop spins), "not engaged" (every socket has id 0)
    or "waiting" (no id yet, some unknown: the loop sleeps until one is
    known)."""
    if not asked:
        return "off"
    ids = list(napi_ids)
    if any(i for i in ids if i is not None):
        return "engaged"
    if ids and all(i == 0 for i in ids):
        return "not engaged"
    return "waiting"


__all__ = ["NapiTuning", "DEFER_HARD_IRQS", "GRO_FLUSH_TIMEOUT_NS",
           "BUSY_POLL_STATES", "busy_poll_state"]
