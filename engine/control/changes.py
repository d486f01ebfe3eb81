"""The control commands that change an engine, each one atomic.

`Changes` runs add-vip, del-vip, add-real, del-real, weight, drain, halt,
online, reload and forget as transactions: the new services and admin
state are made from copies (nothing of the engine is touched while the
request is checked), then applied (tables published, XDP steering,
HAProxy's configuration and the L7 VIP addresses, health targets), then
the operator's changes are saved (control.state).  When any step fails,
the engine gets back what it had (services, admin state, health, the
real-server ids, the overlay), everything is applied again from it, and
the command answers ChangeError: the engine is as it was, and the next
command works.

    changes = Changes(engine, state_file)     # replays the saved changes
    changes.drain("web", "10.0.0.11")
    changes.reload()                          # -> the summary

The engine is an control.engine.Engine, or a fake with its parts (services,
state, health, core, l7, monitor, role, config_path, iface, inside_iface,
_lock, _changed(), _publish(), _l7_sync(), _health_targets(), _refresh,
_thread).
"""

import copy
import logging
import os
import time

from . import config as config_mod
from . import services as svcs
from .l7.conflicts import check_shared_reals
from .state import OperatorState, copy_services, file_sha256
from ..dataplane.tables import check_limits
from ..errors import ConfigError, PyfwdError
from ..model import Real

log = logging.getLogger("pyfwd")


class ChangeError(PyfwdError):
    """A change failed while it was applied and was rolled back (or, if
    `restored` is False, could not be: the message says so)."""

    def __init__(self, message, restored=True):
        super().__init__(message)
        self.restored = restored


def state_path(config_path, state_file=None):
    """Where the operator's changes are kept: state_file (relative to the
    config file's directory), else `<config>.state` beside the config
    file, else None (in memory)."""
    if state_file:
        if config_path and not os.path.isabs(state_file):
            return os.path.join(os.path.dirname(config_path), state_file)
        return state_file
    return f"{config_path}.state" if config_path else None


class Changes:
    """The engine's changes (see the module's docstring).  base: the
    services the file (or the command line) says, before the operator's
    changes; operator: the control.state.OperatorState."""

    def __init__(self, engine, state_file=None):
        self.engine = engine
        self.events = engine.events     # control.events.EventLog
        path = state_path(engine.config_path, state_file)
        self.operator = OperatorState.load(path) if path else \
            OperatorState()
        self.base = list(engine.services)
        self.base_sha = file_sha256(engine.config_path) \
            if engine.config_path else None
        # the config file's loads: at start, then by reload() (ok or not)
        loaded = time.time() if engine.config_path else None
        self._reload = {"last": loaded, "ok": True, "last_ok": loaded}
        if self.operator.entries:
            if self.operator.config_sha256 not in (None, self.base_sha):
                log.warning("%s changed since the operator's changes were "
                            "saved (%s): each is checked against it",
                            engine.config_path, path)
            services, state, notes = self.operator.apply(self.base,
                                                         config_mod.parse_vip)
            check_limits(services)
            engine.services, engine.state = services, state
            log_notes("start", notes)

    # --- the commands -------------------------------------------------------

    def add_vip(self, spec):
        """Add a VIP from a [[vip]] table (a dict); its label."""
        e = self.engine

        def change(services, state):
            svc = config_mod.parse_vip(spec, "add-vip", [
                s.name for s in services if s.name])
            if any(s.vip == svc.vip for s in services):
                raise ConfigError(f"vip {svc.vip}: configured already")
            check_limits(services + [svc])      # the core's: default
            services = e.l7.checked(services + [svc])
            self.operator.add_vip(svc.vip, spec, self.base)
            return services, state, svc
        svc = self.commit("add-vip", change, resolve=True)
        log.info("vip %s (%s): added", svc.label, svc.vip)
        self.events.add("vip", svc.label, None, f"added ({svc.vip})")
        return svc.label

    def del_vip(self, vip):
        """Remove a VIP."""
        def change(services, state):
            s = svcs.find_service(services, vip)
            services.remove(s)
            self.operator.del_vip(s.vip, self.base)
            return services, state, s
        s = self.commit("del-vip", change)
        log.info("vip %s: removed", s.label)
        self.events.add("vip", s.label, None, f"removed ({s.vip})")

    def add_real(self, vip, real):
        """Add real (a Real or `ADDR[:PORT][@W]`) to vip."""
        if not isinstance(real, Real):
            real = Real.parse(real)

        def change(services, state):
            s = svcs.add_real(services, vip, real)
            self.operator.add_real(s.vip, real, self.base)
            return services, state, s
        s = self.commit("add-real", change, resolve=True)
        log.info("vip %s: added real %s", s.label, real)
        self.events.add("real", s.label, real.key,
                        f"added (weight {real.weight})")

    def del_real(self, vip, key):
        """Remove a real server; its flows are rescheduled."""
        def change(services, state):
            s, r = svcs.del_real(services, vip, key)
            self.operator.del_real(s.vip, r, self.base)
            return services, state, (s, r)
        s, r = self.commit("del-real", change)
        log.info("vip %s: removed real %s", s.label, r.key)
        self.events.add("real", s.label, r.key, "removed")

    def set_weight(self, vip, key, weight):
        """A real's new weight (0 to 65535)."""
        def change(services, state):
            s, old = svcs.set_weight(services, vip, key, weight)
            self.operator.weight(s.vip, old.key, weight, self.base)
            return services, state, (s, old)
        s, old = self.commit("weight", change)
        log.info("vip %s: real %s weight %d -> %d", s.label, old.key,
                 old.weight, weight)
        self.events.add("weight", s.label, old.key,
                        f"weight {old.weight} -> {weight}")

    def set_state(self, vip, key, value):
        """drain, halt or online."""
        def change(services, state):
            s, r = svcs.set_state(services, state, vip, key, value)
            self.operator.admin(s.vip, r.key, value)
            return services, state, (s, r)
        s, r = self.commit(value, change)
        log.info("vip %s: real %s %s", s.label, r.key, value)
        self.events.add("state", s.label, r.key, value)

    def forget(self, vip, real):
        """Drop the operator's changes of vip's real (`all`: every one of
        the VIP's) and apply what the file says about them; the changes
        dropped (labels)."""
        e = self.engine
        vip_text = self._vip_text(vip)

        def change(services, state):
            dropped = self.operator.forget(
                vip_text, None if real == "all" else _real_key(real))
            if not dropped:
                raise ConfigError(f"forget: no change of {vip} "
                                  f"{real} by ctl (see `pyfwd ctl changes`)")
            services, state, notes = self.operator.apply(
                self.base, config_mod.parse_vip)
            check_limits(services)
            return e.l7.checked(services), state, [c.label()
                                                   for c in dropped]
        dropped = self.commit("forget", change, resolve=True)
        log.info("forgot the operator's changes: %s", "; ".join(dropped))
        self.events.add("forget", vip_text, None, "forgot " +
                        "; ".join(dropped))
        return dropped

    def reload_status(self):
        """The config file's last load, for the metrics: {"last" (wall-clock
        seconds of the start's load or the last reload, None without a
        config file), "ok" (whether that one worked), "last_ok" (of the
        last that worked)}."""
        return dict(self._reload)

    def reload(self):
        """Read the config file again, replay the operator's changes over
        it and apply the difference; the summary (reload_summary's, with
        "operator_changes", "conflicts", "absorbed").  Recorded as an event,
        done or failed."""
        if not self.engine.config_path:
            raise ConfigError("reload: the engine was not started with "
                              "--config")
        now = time.time()
        try:
            summary = self._reload_file()
        except BaseException as exc:
            self._reload.update(last=now, ok=False)
            self.events.add("reload", text=f"failed, running config kept: "
                            f"{exc}")
            raise
        self._reload.update(last=now, ok=True, last_ok=now)
        self.events.add("reload", text=reload_text(summary))
        return summary

    def _reload_file(self):
        e = self.engine
        cfg = config_mod.load(e.config_path, role=e.role)
        sha = file_sha256(e.config_path)
        if cfg.iface not in (None, e.iface) or \
                cfg.inside_iface != e.inside_iface:
            raise ConfigError("reload: the interfaces cannot change; "
                              "restart the engine for that")
        if cfg.new_flows_per_second != e.options["new_flows_per_second"]:
            raise ConfigError("reload: engine.new_flows_per_second "
                              f"{cfg.new_flows_per_second} differs from the "
                              f"running {e.options['new_flows_per_second']}"
                              "; restart the engine for that")
        running = e.options["timeouts"]
        if cfg.timeouts != running:
            raise ConfigError(f"reload: engine.timeouts {cfg.timeouts} "
                              f"differ from the running {running}; the core "
                              "has them from its start: restart the engine "
                              "for that")
        bgp = getattr(e, "bgp", None)
        if cfg.bgp != (bgp.options if bgp else cfg.bgp.__class__()):
            raise ConfigError("reload: [bgp] differs from the running one; "
                              "restart the engine for that (BIRD's "
                              "sessions are set at start)")

        def change(services, state):
            new, new_state, notes = self.operator.apply(
                cfg.services, config_mod.parse_vip)
            check_limits(new)
            summary = svcs.reload_summary(services, new)
            summary.update(operator_changes=notes["kept"],
                           conflicts=notes["conflicts"],
                           absorbed=notes["absorbed"])
            self.base, self.base_sha = list(cfg.services), sha
            return e.l7.checked(new), new_state, summary
        summary = self.commit("reload", change, resolve=True)
        log.info("reload: %s", summary)
        log_notes("reload", {"conflicts": summary["conflicts"],
                             "absorbed": summary["absorbed"]})
        return summary

    def _vip_text(self, vip):
        """vip (a name, ADDR:PORT/PROTO) as its entries name it: running,
        in the file, or only in the operator's changes (one not applied)."""
        try:
            return str(svcs.find_service(self.engine.services + self.base,
                                         vip).vip)
        except ConfigError:
            if any(k[0] == vip for k in self.operator.entries):
                return vip
            raise

    # --- the transaction ----------------------------------------------------

    def commit(self, what, change, resolve=False):
        """Run change(services, state) on copies of the engine's: it
        returns (new services, new admin state, result) or raises
        (ConfigError: nothing changed).  Then apply them and save the
        operator's changes; on a failure, roll back (see rollback()).
        resolve: wait (up to 5 s) for the control thread to find the new
        real servers' MACs, once applied.  Returns change's result."""
        e = self.engine
        with e._lock:
            before = self._snapshot()
            try:
                services, state, result = change(
                    copy_services(e.services), dict(e.state))
                check_shared_reals(services)
            except BaseException:
                self._restore_bookkeeping(before)
                raise
            try:
                e.services, e.state = list(services), state
                e._changed()
                self.operator.save(self.base_sha)
            except Exception as exc:
                self.rollback(what, before, exc)
            if resolve and e._thread:
                # The control thread resolves the MACs and publishes again.
                e._refresh.wait(timeout=5)
        return result

    def _snapshot(self):
        e = self.engine
        core = getattr(e, "core", None)
        report = getattr(e, "report", None)     # fakes: none
        return {"services": list(e.services), "state": dict(e.state),
                "health": dict(e.health),
                "ledger": copy.deepcopy(report.ledger) if report else None,
                "ids": copy.deepcopy(core.ids) if core is not None
                else None,
                "l7_running": e.l7.haproxy is not None,
                "operator": self.operator.snapshot(),
                "base": (self.base, self.base_sha)}

    def _restore_bookkeeping(self, before):
        self.operator.restore(before["operator"])
        self.base, self.base_sha = before["base"]

    def rollback(self, what, before, exc):
        """Give the engine back what it had before the change and apply it
        again (tables, steering, HAProxy and its addresses, health
        targets); raise ChangeError saying what failed (and whether the
        restoring did too)."""
        e = self.engine
        log.error("%s failed: %s; rolling back", what, exc)
        self._restore_bookkeeping(before)
        e.services, e.state = before["services"], before["state"]
        e.health.clear()
        e.health.update(before["health"])
        if before["ids"] is not None:
            e.core.ids = before["ids"]
        if before["ledger"] is not None:    # the counters as they were
            e.report.ledger = before["ledger"]
        failed = []
        steps = [("tables and steering", e._publish)]
        if before["l7_running"]:
            steps.append(("HAProxy", e._l7_sync))
        else:
            steps.append(("HAProxy", e.l7.stop))
        if e.monitor:
            steps.append(("health checks", e._health_targets))
        for name, step in steps:
            try:
                step()
            except Exception as again:      # noqa: BLE001 - said below
                log.error("%s: restoring the %s failed: %s", what, name,
                          again)
                failed.append(f"{name}: {again}")
        if failed:
            raise ChangeError(
                f"{what}: failed ({exc}); restoring the previous state "
                f"failed too ({'; '.join(failed)}): the next change "
                "applies everything again", restored=False) from exc
        raise ChangeError(f"{what}: not applied, the engine is as it was: "
                          f"{exc}") from exc

    # --- what the operator changed ------------------------------------------

    def rows(self):
        """`ctl changes`: every operator change, with its conflict."""
        return self.operator.rows()


def _real_key(text):
    """A real's key from `ADDR[:PORT]` as the operator typed it."""
    return Real.parse(text).key


def reload_text(summary):
    """A reload's summary in one line, for the event log."""
    said = [f"{k.replace('_', ' ')}: {', '.join(map(str, summary[k]))}"
            for k in ("added_vips", "removed_vips", "changed", "conflicts")
            if summary.get(k)]
    return "reloaded" + (f": {'; '.join(said)}" if said else ", no change")


def log_notes(when, notes):
    """Log what replaying the operator's changes found."""
    for line in notes.get("conflicts", ()):
        log.warning("%s: operator change %s", when, line)
    for line in notes.get("absorbed", ()):
        log.info("%s: operator change %s", when, line)
    for line in notes.get("kept", ()):
        log.info("%s: operator change kept: %s", when, line)


__all__ = ["Changes", "ChangeError", "state_path"]
