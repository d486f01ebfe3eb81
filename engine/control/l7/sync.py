"""The engine's L7 VIPs kept in HAProxy: what pyfwd says, HAProxy does.

`L7Sync` starts HAProxy as the engine's child when the first L7 VIP comes,
puts the L7 VIP addresses on the interface (HAProxy binds them; shared
addresses and the operator's: addresses.py), reloads HAProxy seamlessly
when its configuration text changes (and then removes the addresses no L7
VIP needs any more), sets every server's state and weight through the
runtime API as the engine's admin state (drain, halt) and health checks
say, restarts HAProxy when it died (watchdog) and gives HAProxy's rows to
`show`.

    l7 = L7Sync("eth0")
    l7.start(services, state, health)   # services: the L7 ones
    l7.checked(services)                # before a change: HAProxy's say
    l7.sync(services, state, health)    # after every change
    l7.stop()

state: {(vip, real key): "drain" | "halt"}; health: {(vip, real key):
(up, detail)}, a real without an entry is up.
"""

import logging
import os

from .addresses import InterfaceAddresses
from .check import validate_l7
from .haproxy import HAProxy
from .render import haproxy_weights, l7_name, l7_server, l7_vips, render
from ..services import is_up, l7
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


class L7Sync:
    """HAProxy as the engine's L7 VIPs say (see the module's docstring).

    iface: the engine's interface; new_proxy(iface) -> an HAProxy (or a
    fake with its methods); addresses: an InterfaceAddresses (or a fake
    with open/add/release/close).  haproxy: the running HAProxy, or None.  Not
    thread-safe: the engine calls it under its lock (watchdog() aside).
    """

    def __init__(self, iface, *, new_proxy=new_haproxy, addresses=None):
        self.iface = iface
        self.haproxy = None
        self.addresses = addresses or InterfaceAddresses(iface)
        self._new_proxy = new_proxy
        self._text = None           # the configuration HAProxy runs
        self._bound = set()         # the addresses it binds

    def start(self, services, state, health):
        """HAProxy as our child, the L7 VIPs reachable on the interface.
        ConfigError (no or an old HAProxy, a rejected configuration) or
        PyfwdError (it does not start, the kernel refuses an address);
        call stop() then."""
        proxy = self._new_proxy(self.iface)
        proxy.check_binary()
        self.addresses.open()
        self._configure(proxy, services, proxy.start)
        self.haproxy = proxy
        log.info("HAProxy serves %s", ", ".join(
            f"{l7_name(s)} ({s.vip}, {s.l7.l7_mode})" for s in services))
        self.sync(services, state, health)

    def sync(self, services, state, health):
        """HAProxy's configuration (reloaded seamlessly when it changes)
        and every server's state and weight as pyfwd sees them."""
        if not self.haproxy:
            return
        self._configure(self.haproxy, services, self.haproxy.reload)
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

    def checked(self, services):
        """`services` (the engine's, L4 and L7), once HAProxy would take
        their L7 VIPs; ConfigError (see check.validate_l7) otherwise.  The
        engine asks before it takes a change, so that a refused one
        changes nothing.  Without HAProxy running, a new one checks them
        (it must be installed then)."""
        vips = l7(services)
        if vips:
            proxy = self.haproxy or self._new_proxy(self.iface)
            if render(l7_vips(vips), proxy.runtime_socket) != self._text:
                validate_l7(proxy, vips)
        return services

    def _configure(self, proxy, services, run):
        """run(text) (proxy.start or proxy.reload) when the configuration
        text changes: the addresses it binds go on the interface before,
        those no VIP binds any more leave it after.  When adding an address
        or run raises, the addresses are those of the configuration still
        running, and the next call runs again."""
        text = render(l7_vips(services), proxy.runtime_socket)
        if text == self._text:
            return
        needed = {s.vip.address for s in services}
        try:
            self.addresses.add(needed)
            run(text)
        except BaseException:
            # HAProxy's file may hold the refused text: the next call
            # installs its text again, whatever it is.
            self._text = None
            self.addresses.release(keep=self._bound)
            raise
        self._text, self._bound = text, needed
        self.addresses.release(keep=needed)

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
        self._text, self._bound = None, set()
        self.addresses.close()


__all__ = ["L7Sync", "new_haproxy", "server_state"]
