"""`pyfwd doctor`: is this machine, and this interface, ready to run pyfwd?

Every check gives a findings.Finding: ok, or what breaks (a note, something
that degrades, something that blocks forwarding) and the fix.  run() looks
at the machine (the build, the XDP verifier, AF_XDP, bpffs, tcx), an
interface and its veth peer, and a VIP's ARP answers; warn_at_start() logs
the fast ones' problems when `pyfwd start` begins.  Nothing here changes
the machine; the ARP check sends one request.

The checks themselves are pure (ifchecks.py); ifread.py reads what they
look at.
"""

import ipaddress
import logging
import os
import socket

from ..errors import ConfigError
from . import ifchecks, ifread
from .findings import Finding, log_line, ok, problems

log = logging.getLogger("pyfwd")

EXTENSION = "C extension pyfwd._fastpath"


def _root():
    if os.geteuid() == 0:
        return ok("root", "host", "yes")
    return Finding("root", "host", "blocks",
                   "no: the engine, the lab and most checks need root",
                   "run it as root (sudo)")


def _native():
    """(its finding, the module dataplane.native or None)."""
    try:
        from ..dataplane import native
    except Exception as exc:  # BuildError, or a broken .so
        return Finding(EXTENSION, "host", "blocks", str(exc),
                       "`pip install -e .` (the README lists the Debian "
                       "packages it needs)"), None
    return ok(EXTENSION, "host",
              f"loaded, {len(native.REASONS)} verdict reasons"), native


def _xdp_object(native):
    if native is None:
        return [Finding("XDP program", "host", "blocks",
                        "needs the C extension", "build it (above)")]
    try:
        path = native.bpf_object_path("steer")
    except Exception as exc:
        return [Finding("XDP program", "host", "blocks", str(exc),
                        "`pip install -e .` builds it (clang -target bpf)")]
    found = ok("XDP program", "host", path)
    if os.geteuid() != 0:
        return [found, Finding("XDP verifier", "host", "note",
                               "not checked: loading needs root",
                               "run `pyfwd doctor` as root")]
    try:
        native.bpf_object_check(path)
    except Exception as exc:
        return [found, Finding("XDP verifier", "host", "blocks", str(exc),
                               "a kernel whose verifier takes it (the "
                               "README's kernel table: Linux 5.11 or newer)")]
    return [found, ok("XDP verifier", "host",
                      "steer.bpf.o loads on this kernel")]


def _frame_size():
    """The AF_XDP frame size, or None when the C extension is missing."""
    try:
        from ..dataplane.io import FRAME_SIZE
    except Exception:   # BuildError, or a broken .so: reported by _native
        return None
    return FRAME_SIZE


def _plan(inside_iface=None, modes=(), backend="auto", queues=None,
          fastpath=None):
    """ifchecks.Plan of an engine run with these options (modes: those of
    its VIPs; empty: not known; fastpath: the XDP fast path asked for,
    None: not known)."""
    return ifchecks.Plan(modes=frozenset(modes), backend=backend,
                         queues=queues, inside=inside_iface,
                         frame_size=_frame_size(), fastpath=fastpath)


def _ifindex(name):
    """ifindex of `name` (the tcx probe's target), or lo's."""
    try:
        return socket.if_nametoindex(name) if name else 1
    except OSError:
        return 1


def start_checks(iface, inside_iface=None, modes=(), backend="auto",
                 queues=None, fastpath=None):
    """The fast checks: the interfaces' and the host's (AF_XDP, bpffs,
    tcx) findings for an engine run with these options.  Raises
    ConfigError when an interface does not exist."""
    how = _plan(inside_iface, modes, backend, queues, fastpath)
    host = ifread.read_host(_ifindex(iface))
    found = ifchecks.host_checks(host, how)
    for name in filter(None, (iface, inside_iface)):
        found += ifchecks.link_checks(ifread.read_link(name), host, how)
    return found


def _arp(iface, vip, timeout):
    """The ARP check of `vip` (an ipaddress address) on `iface` (one
    broadcast request)."""
    from ..neighbours.check import arp_check
    from ..neighbours.kernel import interface
    if vip.version != 4:
        return ok("arp", iface, f"{vip}: IPv6, no ARP (not checked)")
    if os.geteuid() != 0:
        return Finding("arp", iface, "note", f"{vip}: not checked (asking "
                       "on the wire needs root)", "run it as root")
    answers = arp_check(iface, vip, timeout=timeout,
                        own_mac=interface(iface)[1])
    return ifchecks.arp(iface, vip, answers)


def run(iface=None, inside_iface=None, modes=(), vip=None, backend="auto",
        queues=None, arp_timeout=1.0, fastpath=None):
    """Every finding, in order: the machine's (root, the build, the XDP
    verifier, AF_XDP, bpffs, tcx), then the interfaces' (iface and the
    inside one; none when iface is None), then who answers ARP for `vip`
    on iface (which sends an ARP request).  Raises ConfigError when an
    interface does not exist or the VIP is not an address."""
    if vip is not None:
        try:
            vip = ipaddress.ip_address(vip)
        except ValueError:
            raise ConfigError(f"vip {vip!r}: expected an IPv4 or IPv6 "
                              "address") from None
    first, native = _native()
    found = [_root(), first, *_xdp_object(native),
             *start_checks(iface, inside_iface, modes, backend, queues,
                           fastpath)]
    if vip is not None and iface:
        found.append(_arp(iface, vip, arp_timeout))
    return found


def warn_at_start(iface, inside_iface=None, modes=(), backend="auto",
                  queues=None, fastpath=False):
    """Log every problem start_checks() finds as a warning, blocking ones
    too (the engine starts anyway); the findings.  Never raises: a check
    that cannot run is logged and skipped."""
    try:
        found = start_checks(iface, inside_iface, modes, backend, queues,
                             fastpath)
    except Exception as exc:    # a check never keeps the engine from starting
        log.warning("doctor: interface checks skipped: %s", exc)
        return []
    for finding in problems(found):
        log.warning("%s", log_line(finding))
    return found
