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

A real that fails pyfwd's health check is DOWN in HAProxy (`set server
health down`: no new clients, its sessions go on; on_down = "reset" closes
them too), drain is DRAIN, halt is MAINT with its sessions closed.

The VIP addresses follow the role (`set_active`): an active node has them
on the interface (and announces them: `held()`), a standby one does not;
HAProxy binds them either way (`transparent`, render.py), so a takeover
only adds the addresses.

The files of one engine's HAProxy have stable names (`paths`):
/run/pyfwd/haproxy-IFACE.{cfg,sock,sock.master,pid}, with the network
namespace's inode after IFACE outside the host's namespace
(haproxy-eth0-ns4026532288.sock), so a restarted engine finds and clears
what a dead one left (`clean`).
"""

import logging
import os

from .addresses import InterfaceAddresses
from .check import validate_l7
from .haproxy import HAProxy
from .render import haproxy_weights, l7_name, l7_server, l7_vips, render
from .transparent import (TransparentRouting, check_sources,
                          client_endpoints, client_versions)
from ..services import is_up, l7
from ...errors import PyfwdError

log = logging.getLogger("pyfwd")

RUN_DIR = "/run/pyfwd"


def _netns_inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def paths(iface, run_dir=RUN_DIR):
    """The base path (no suffix) of the files of the HAProxy that serves
    iface's L7 VIPs from this thread's network namespace: stable across
    restarts of the engine, distinct per interface and namespace."""
    ns = _netns_inode("/proc/thread-self/ns/net")
    host = _netns_inode("/proc/1/ns/net")
    suffix = f"-ns{ns}" if ns is not None and ns != host else ""
    return f"{run_dir}/haproxy-{iface}{suffix}"


def new_haproxy(iface):
    """An HAProxy with its files in RUN_DIR (see paths())."""
    base = paths(iface)
    os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
    return HAProxy(f"{base}.cfg", f"{base}.sock")


def server_state(admin, up, weight):
    """HAProxy's admin state of a server ("ready", "drain" or "maint") from
    the engine's admin state ("drain", "halt" or None) and its weight.
    `up` (its health) is HAProxy's operational state, set apart
    (RuntimeApi.set_health): it does not make a server MAINT."""
    del up
    if admin == "halt":
        return "maint"
    if admin == "drain" or not weight:
        return "drain"
    return "ready"


def cuts_sessions(admin, up, on_down):
    """True when the server's sessions must be closed: halted, or down on
    a VIP whose on_down is "reset"."""
    return admin == "halt" or (not up and on_down == "reset")


class L7Sync:
    """HAProxy as the engine's L7 VIPs say (see the module's docstring).

    iface: the engine's interface; new_proxy(iface) -> an HAProxy (or a
    fake with its methods); addresses: an InterfaceAddresses (or a fake
    with open/add/release/close).  active: the node's role (see
    set_active).  haproxy: the running HAProxy, or None.  Not thread-safe:
    the engine calls it under its lock (watchdog() aside).
    """

    def __init__(self, iface, *, new_proxy=new_haproxy, addresses=None,
                 active=True, routing=None):
        self.iface = iface
        self.active = active
        self.haproxy = None
        self.addresses = addresses or InterfaceAddresses(iface)
        self.routing = routing or TransparentRouting()
        self._clients = set()       # l7_source client: the IP versions
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
        self._say_one_arm(services)
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
                admin, up = state.get(k), is_up(health, k)
                be, srv = l7_name(s), l7_server(r)
                self.haproxy.set_state(be, srv,
                                       server_state(admin, up, r.weight))
                self.haproxy.set_health(be, srv, up)
                if r.weight:
                    self.haproxy.set_weight(be, srv, hw)
                if cuts_sessions(admin, up, s.on_down):
                    self.haproxy.shutdown_sessions(be, srv)

    def checked(self, services):
        """`services` (the engine's, L4 and L7), once HAProxy would take
        their L7 VIPs; ConfigError (see check.validate_l7) otherwise.  The
        engine asks before it takes a change, so that a refused one
        changes nothing.  Without HAProxy running, a new one checks them
        (it must be installed then)."""
        vips = l7(services)
        self._check_sources(vips)
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
        clients = client_versions(services)
        try:
            self._check_sources(services)
            if self.active:
                self.addresses.add(needed)
            if clients != self._clients:
                self.routing.apply(clients)
            run(text)
        except BaseException:
            if clients != self._clients:
                try:
                    self.routing.apply(self._clients)
                except PyfwdError as exc:
                    log.warning("%s", exc)
            # HAProxy's file may hold the refused text: the next call
            # installs its text again, whatever it is.
            self._text = None
            self.addresses.release(keep=self._bound if self.active else ())
            raise
        self._text, self._bound = text, needed
        if clients != self._clients:
            self._clients = clients
            self._say_one_arm(services)
        self.addresses.release(keep=needed if self.active else ())

    def _check_sources(self, services):
        """ConfigError for an l7_source address that is not this host's."""
        if any(s.l7.l7_source not in ("balancer", "vip", "client")
               for s in services):
            check_sources(services, self.routing.local_addresses())

    def _say_one_arm(self, services):
        """Warn about the l7_source client VIPs' real servers that are
        reached through the clients' interface: their answers come back
        only if this balancer is their gateway."""
        reals = sorted({a for a, _ in client_endpoints(services)},
                       key=lambda a: (a.version, a))
        if not reals or not self.haproxy:
            return
        try:
            one_arm = self.routing.one_arm_reals(self.iface, reals)
        except PyfwdError as exc:
            log.warning("%s", exc)
            return
        if one_arm:
            log.warning(
                "l7_source client: real server(s) %s are reached through "
                "%s, the interface the clients come in on (one-arm): they "
                "answer the clients' addresses, so their answers come back "
                "to HAProxy only if this balancer is their default gateway; "
                "otherwise those connections hang. Make it their gateway, "
                "put them behind an inside interface (two-arm), or use "
                "l7_source \"balancer\"", ", ".join(map(str, one_arm)),
                self.iface)

    def set_active(self, active):
        """Follow the node's role: active puts the addresses HAProxy binds
        on the interface (then announce held()), standby removes ours.
        Never raises: a role change must go through for the L4 VIPs too,
        so an address the kernel refuses is logged as an error."""
        self.active = bool(active)
        if not self.haproxy:
            return
        if not self.active:
            self.addresses.release(keep=())
            return
        try:
            self.addresses.add(self._bound)
        except PyfwdError as exc:
            log.error("ha: taking over the L7 VIPs: %s", exc)

    def held(self):
        """The L7 VIP addresses this node holds (active) as ([IPv4],
        [IPv6]), sorted: those to announce; ([], []) when standby."""
        if not (self.active and self.haproxy):
            return [], []
        held = sorted(self._bound, key=lambda a: (a.version, a))
        return ([a for a in held if a.version == 4],
                [a for a in held if a.version == 6])

    def clean(self):
        """At the engine's start, without L7 VIPs: what a dead engine's
        HAProxy left (its process if it outlived it, sockets, pid file)
        and the addresses it added are removed.  Logged, never raises."""
        try:
            proxy = self._new_proxy(self.iface)
            proxy.clear_leftovers()
            if os.path.exists(proxy.config_path):
                os.unlink(proxy.config_path)
            self.addresses.open()
            self.addresses.close()
            self.routing.open()
            self.routing.close()        # the rules a dead pyfwd left
        except (PyfwdError, OSError) as exc:
            log.warning("L7 clean-up of an earlier run: %s", exc)

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
        """{"pid" (the master's), "restarts", "runtime_socket" (the admin
        socket: `socat stdio PATH`), "master_socket", "config"}, or None
        without HAProxy."""
        if not self.haproxy:
            return None
        h = self.haproxy
        return {"pid": h.proc.pid if h.proc else None,
                "restarts": h.restarts, "runtime_socket": h.runtime_socket,
                "master_socket": h.master_socket, "config": h.config_path}

    def stop(self):
        """Stop HAProxy; remove the addresses we added (idempotent)."""
        if self.haproxy:
            self.haproxy.stop()
            self.haproxy = None
        self._text, self._bound = None, set()
        self.addresses.close()
        self.routing.close()
        self._clients = set()


__all__ = ["L7Sync", "paths", "new_haproxy", "server_state", "cuts_sessions"]
