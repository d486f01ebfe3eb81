"""The engine's L7 VIPs kept in HAProxy: what pyfwd says, HAProxy does.

`L7Sync` starts HAProxy as the engine's child when the first L7 VIP comes,
puts the L7 VIP addresses on the interface (HAProxy binds them), reloads
HAProxy seamlessly when its configuration text changes, sets every
server's state and weight through the runtime API as the engine's admin
state (drain, halt) and health checks say, restarts HAProxy when it died
(watchdog) and gives HAProxy's rows to `show`.

    l7 = L7Sync("eth0")
    l7.start(services, state, health)   # services: the L7 ones
    l7.sync(services, state, health)    # after every change
    l7.stop()

state: {(vip, real key): "drain" | "halt"}; health: {(vip, real key):
(up, detail)}, a real without an entry is up.
"""

import logging
import os

from pyroute2 import IPRoute

from ..._netns import in_netns
from .haproxy import HAProxy
from .render import (haproxy_weights, l7_name, l7_server,
                                     l7_vips, render)
from ..services import is_up
from ...errors import PyfwdError

log = logging.getLogger("pyfwd")

RUN_DIR = "/run/pyfwd"


def new_haproxy(iface):
    """An HAProxy with its files in RUN_DIR, named by pid and interface."""
    base = f"{RUN_DIR}/haproxy-{os.getpid()}-{iface}"
    os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
    return HAProxy(f"{base}.cfg", f"{base}.sock")


def server_state(admin, up, weight):
    """HAProxy's state of a server ("ready", "drain" or "maint") from the
    engine's admin state ("drain", "halt" or None), its health and its
    weight."""
    if admin == "halt" or not up:
        return "maint"
    if admin == "drain" or not weight:
        return "drain"
    return "ready"


class InterfaceAddresses:
    """The L7 VIP addresses pyfwd adds to the interface, each once, and
    removes again at stop.  open() remembers the calling thread's network
    namespace (the engine's), where changes asked from any thread later
    (a control request, a reload, stop) are made.  added: what we added."""

    def __init__(self, iface):
        self.iface = iface
        self.added = []
        self._netns_fd = None

    def open(self):
        if self._netns_fd is None:
            self._netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)

    def add(self, addresses):
        """Put the addresses (ip_address objects) on the interface, but
        those that are there already."""
        want = [a for a in addresses if str(a) not in self.added]
        if not want:
            return

        def add():
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=self.iface)[0]
                have = {a.get_attr("IFA_ADDRESS")
                        for a in ipr.get_addr(index=idx)}
                for a in want:
                    if str(a) in have:
                        continue
                    ipr.addr("add", index=idx, address=str(a),
                             prefixlen=32 if a.version == 4 else 128)
                    self.added.append(str(a))
                    log.info("%s: added L7 VIP address %s", self.iface, a)
        in_netns(self._netns_fd, add)

    def close(self):
        """Remove what we added (logged when that fails: the namespace may
        be gone); forget the namespace."""
        if self.added:
            def delete():
                with IPRoute() as ipr:
                    idx = ipr.link_lookup(ifname=self.iface)[0]
                    for a in self.added:
                        ipr.addr("del", index=idx, address=a,
                                 prefixlen=32 if ":" not in a else 128)
            try:
                in_netns(self._netns_fd, delete)
            except Exception as exc:     # gone with its namespace
                log.warning("removing L7 VIP addresses: %s", exc)
            self.added = []
        if self._netns_fd is not None:
            os.close(self._netns_fd)
            self._netns_fd = None


class L7Sync:
    """HAProxy as the engine's L7 VIPs say (see the module's docstring).

    iface: the engine's interface; new_proxy(iface) -> an HAProxy (or a
    fake with its methods); addresses: an InterfaceAddresses (or a fake
    with open/add/close).  haproxy: the running HAProxy, or None.  Not
    thread-safe: the engine calls it under its lock (watchdog() aside).
    """

    def __init__(self, iface, *, new_proxy=new_haproxy, addresses=None):
        self.iface = iface
        self.haproxy = None
        self.addresses = addresses or InterfaceAddresses(iface)
        self._new_proxy = new_proxy
        self._text = None

    def start(self, services, state, health):
        """HAProxy as our child, the L7 VIPs reachable on the interface.
        ConfigError (no or an old HAProxy, a rejected configuration) or
        PyfwdError (it does not start); call stop() then."""
        proxy = self._new_proxy(self.iface)
        proxy.check_binary()
        self.addresses.open()
        self.addresses.add([s.vip.address for s in services])
        self._text = render(l7_vips(services), proxy.runtime_socket)
        proxy.start(self._text)
        self.haproxy = proxy
        log.info("HAProxy serves %s", ", ".join(
            f"{l7_name(s)} ({s.vip}, {s.l7.l7_mode})" for s in services))
        self.sync(services, state, health)

    def sync(self, services, state, health):
        """HAProxy's configuration (reloaded seamlessly when it changes)
        and every server's state and weight as pyfwd sees them."""
        if not self.haproxy:
            return
        self.addresses.add([s.vip.address for s in services])
        text = render(l7_vips(services), self.haproxy.runtime_socket)
        if text != self._text:
            self.haproxy.reload(text)
            self._text = text
        for s in services:
            # HAProxy's weights are 0..256: the same ratios, scaled.
            weights = haproxy_weights([r.weight for r in s.reals])
            for r, hw in zip(s.reals, weights):
                k = (s.vip, r.key)
                want = server_state(state.get(k), is_up(health, k),
                                    r.weight)
                self.haproxy.set_state(l7_name(s), l7_server(r), want)
                if r.weight:
                    self.haproxy.set_weight(l7_name(s), l7_server(r), hw)

    def watchdog(self):
        """Restart HAProxy when it died (see HAProxy.ensure_running); True
        when it was restarted: then sync() again."""
        if not self.haproxy:
            return False
        restarts = self.haproxy.restarts
        self.haproxy.ensure_running()
        if self.haproxy.restarts == restarts:
            return False
        log.warning("HAProxy was down: restarted (%d times so far)",
                    self.haproxy.restarts)
        return True

    def rows(self):
        """{(backend, server): HAProxy's state and counters}: haproxy_state
        (admin), haproxy_status (operational), active, flows_new, bytes.
        {} when HAProxy is not running or does not answer (logged)."""
        if not self.haproxy:
            return {}
        rows = {}
        try:
            for st in self.haproxy.servers_state():
                rows.setdefault((st["backend"], st["server"]), {}).update(
                    haproxy_state=st.get("admin_state"),
                    haproxy_status=st.get("oper_state"))
            for st in self.haproxy.stats():
                key = (st.get("pxname"), st.get("svname"))
                if key in rows:
                    rows[key].update(active=st.get("scur", 0),
                                     flows_new=st.get("stot", 0),
                                     bytes=(st.get("bin", 0) or 0) +
                                     (st.get("bout", 0) or 0))
        except PyfwdError as exc:
            log.warning("HAProxy runtime API: %s", exc)
        return rows

    def status(self):
        """{"pid" (the master's), "restarts"}, or None without HAProxy."""
        if not self.haproxy:
            return None
        proc = self.haproxy.proc
        return {"pid": proc.pid if proc else None,
                "restarts": self.haproxy.restarts}

    def stop(self):
        """Stop HAProxy; remove the addresses we added (idempotent)."""
        if self.haproxy:
            self.haproxy.stop()
            self.haproxy = None
        self.addresses.close()


__all__ = ["L7Sync", "InterfaceAddresses", "new_haproxy", "server_state"]
