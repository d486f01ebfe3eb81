"""HAProxy's runtime API: the admin socket of its workers and the master's
CLI socket (server state and weight, `show servers state`, `show stat`,
`show proc`)."""

import csv
import re
import socket

from .render import HAPROXY_WEIGHT_MAX
from ...errors import ConfigError, PyfwdError

STATES = ("ready", "drain", "maint")

# srv_op_state and srv_admin_state of `show servers state` (server.h)
OP_STATES = {0: "stopped", 1: "starting", 2: "running", 3: "stopping"}
_ADMIN_MAINT = 0x01 | 0x02 | 0x04 | 0x20 | 0x40     # forced, inherited,
_ADMIN_DRAIN = 0x08 | 0x10                          # config, dns, hostname

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class RuntimeApi:
    """The runtime API of one HAProxy.

    runtime_socket: the admin socket of the workers; master_socket: the
    master's CLI socket (default `runtime_socket + ".master"`).
    """

    def __init__(self, runtime_socket, master_socket=None):
        self.runtime_socket = str(runtime_socket)
        self.master_socket = str(master_socket or
                                 self.runtime_socket + ".master")

    def runtime(self, cmd, timeout=5.0):
        """Send one command on the runtime (admin) socket; its answer text.

        Raises PyfwdError when the socket does not answer.
        """
        return _unix_command(self.runtime_socket, cmd, timeout)

    def master_cli(self, cmd, timeout=5.0):
        """Send one command on the master CLI socket; its answer text."""
        return _unix_command(self.master_socket, cmd, timeout)

    def procs(self):
        """`show proc` of the master: {"master": pid, "workers": [pid],
        "old_workers": [pid]} (old workers finish connections after a
        reload)."""
        out = {"master": None, "workers": [], "old_workers": []}
        section = None
        for line in self.master_cli("show proc").splitlines():
            if line.startswith("# old workers"):
                section = "old_workers"
            elif line.startswith("# workers"):
                section = "workers"
            elif line.startswith("#"):
                section = None if "PID" not in line else section
            else:
                f = line.split()
                if len(f) >= 2 and f[0].isdigit():
                    if f[1] == "master":
                        out["master"] = int(f[0])
                    elif f[1] == "worker" and section:
                        out[section].append(int(f[0]))
        return out

    def set_state(self, backend, server, state):
        """Set a server's admin state: "ready", "drain" (no new clients,
        cookie-persistent ones still come) or "maint" (nothing new).

        Raises ConfigError for a bad state or name, PyfwdError when HAProxy
        refuses (e.g. no such server).
        """
        if state not in STATES:
            raise ConfigError(f"state {state!r}: expected one of "
                              f"{', '.join(STATES)}")
        self._admin(f"set server {_name(backend)}/{_name(server)} "
                    f"state {state}")

    def set_weight(self, backend, server, weight):
        """Set a server's weight, 0..256 (HAProxy's range; see
        haproxy_weights).  Raises like set_state."""
        if (isinstance(weight, bool) or not isinstance(weight, int)
                or not 0 <= weight <= HAPROXY_WEIGHT_MAX):
            raise ConfigError(f"weight {weight!r}: expected an integer from "
                              f"0 to {HAPROXY_WEIGHT_MAX}")
        self._admin(f"set weight {_name(backend)}/{_name(server)} {weight}")

    def set_health(self, backend, server, up):
        """Set a server's operational state from pyfwd's health check: UP,
        or DOWN (no new clients; its sessions go on unless
        shutdown_sessions()).  HAProxy runs no check of its own on pyfwd's
        servers, so the state stays until set again; `show stat` says UP
        as "no check", DOWN as "DOWN".  Raises like set_state."""
        self._admin(f"set server {_name(backend)}/{_name(server)} health "
                    + ("up" if up else "down"))

    def shutdown_sessions(self, backend, server):
        """Close every session of a server now (halt; a DOWN server of an
        on_down = "reset" VIP).  Raises like set_state."""
        self._admin(f"shutdown sessions server {_name(backend)}/"
                    f"{_name(server)}")

    def _admin(self, cmd):
        answer = self.runtime(cmd).strip()
        if answer:          # these commands answer nothing when they succeed
            raise PyfwdError(f"HAProxy: {cmd}: {answer}")

    def servers_state(self):
        """`show servers state`, one dict per server: backend, server,
        address, port, admin_state ("ready", "drain" or "maint": the words
        of `set server ... state`), oper_state ("running", "stopped",
        "starting", "stopping"), weight (current), admin_flags (raw)."""
        lines = self.runtime("show servers state").splitlines()
        header = next((ln[1:].split() for ln in lines
                       if ln.startswith("# be_id")), None)
        if header is None:
            raise PyfwdError("HAProxy: unexpected show servers state answer: "
                             + " | ".join(lines[:3]))
        rows = []
        for line in lines:
            f = line.split()
            if not f or line.startswith("#") or len(f) < len(header):
                continue
            r = dict(zip(header, f))
            admin = int(r["srv_admin_state"])
            rows.append({
                "backend": r["be_name"], "server": r["srv_name"],
                "address": r["srv_addr"], "port": int(r["srv_port"]),
                "admin_state": ("maint" if admin & _ADMIN_MAINT else
                                "drain" if admin & _ADMIN_DRAIN else "ready"),
                "oper_state": OP_STATES.get(int(r["srv_op_state"]),
                                          r["srv_op_state"]),
                "weight": int(r["srv_uweight"]),
                "admin_flags": admin,
            })
        return rows

    STAT_FIELDS = ("pxname", "svname", "scur", "stot", "bin", "bout",
                   "status", "weight")

    def stats(self):
        """`show stat`, one dict per row (FRONTEND, BACKEND and each server):
        pxname, svname, scur, stot, bin, bout (ints), status (HAProxy's
        word: UP, DRAIN, MAINT, no check, OPEN ...), weight (int or None)."""
        text = self.runtime("show stat")
        if not text.startswith("# "):
            raise PyfwdError("HAProxy: unexpected show stat answer: "
                             + text[:200])
        rows = []
        for r in csv.DictReader(text[2:].splitlines()):
            if not r.get("pxname"):
                continue
            d = {k: r.get(k, "") for k in self.STAT_FIELDS}
            for k in ("scur", "stot", "bin", "bout", "weight"):
                d[k] = int(d[k]) if d[k].isdigit() else None
            rows.append(d)
        return rows


def _name(name):
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(f"name {name!r}: expected [A-Za-z0-9_-]+")
    return name


def _unix_command(path, cmd, timeout):
    if "\n" in cmd:
        raise ConfigError(f"command {cmd!r}: expected one line")
    chunks = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(cmd.encode() + b"\n")
            s.shutdown(socket.SHUT_WR)      # non-interactive: answer, close
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
    except OSError as e:
        raise PyfwdError(f"HAProxy socket {path}: {cmd!r}: {e}") from None
    return b"".join(chunks).decode(errors="replace")


__all__ = ["STATES", "OP_STATES", "RuntimeApi"]
