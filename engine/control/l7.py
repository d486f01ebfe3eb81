"""L7 VIPs: pyfwd drives a real HAProxy (2.0 or later, tested with 2.6).

Two halves, like the rest of pyfwd:

* pure values, testable without HAProxy: `L7Options.from_dict` parses the L7
  keys of a [[vip]] table, `render` turns `L7Vip`s into HAProxy's
  configuration text;
* `HAProxy` owns one HAProxy process tree (master-worker, in the foreground,
  as our child in its own process group): start, seamless reload, the
  runtime API (server state and weight, stats) and a watchdog.

Each L7 VIP is one `listen NAME` section, so the frontend and the backend share
the name that `set_state`/`set_weight` take.  Real servers get no HAProxy
checks: pyfwd's own health checks set their state through the runtime API.
A server is named from the real's key (`r_10_0_0_11_80`), so the name stays
the same across reloads and HAProxy keeps a server's state by name.

Schedulers map to HAProxy's `balance`: rr, wrr -> roundrobin; lc, wlc ->
leastconn; sh -> source; maglev -> source with `hash-type consistent` (a
consistent hash of the client address: adding or removing a real moves only
its share of clients, which is what maglev is for; it is not Google's maglev
table).  HAProxy weights run from 0 to 256: a backend whose weights go higher
is scaled down proportionally (`haproxy_weights`).

What happens when HAProxy dies (measured with HAProxy 2.6):
* the master is killed: `ensure_running` sees the child gone, kills what is
  left of its process group and starts HAProxy again with the last config;
* a worker is killed (kill -9): HAProxy 2.6's master does not restart it; it
  SIGTERMs every process and exits (exit-on-failure, and "All workers exited"
  even with `no-exit-on-failure`), so `ensure_running` then sees the master
  gone and restarts.  If a master ever stays up with no worker answering on
  the runtime socket for more than `stale_after` seconds (a hung worker;
  measured with SIGSTOP), `ensure_running` ends the whole group and starts
  again: a reload would not do, as the hung worker keeps its SO_REUSEPORT
  listeners and the kernel keeps handing it new connections.
Each recovery is logged and counted in `HAProxy.restarts`.  Client
connections that the dead worker carried are lost; the listening ports are
closed for the ~0.1-0.5 s the restart takes.
"""

import collections
import csv
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from pyfwd.errors import ConfigError, PyfwdError

log = logging.getLogger("pyfwd.haproxy")

L7_MODES = ("http", "tcp")
STATES = ("ready", "drain", "maint")
HAPROXY_WEIGHT_MAX = 256
MIN_VERSION = (2, 0)

# pyfwd scheduler -> (HAProxy balance algorithm, hash-type or None)
BALANCE = {"rr": ("roundrobin", None), "wrr": ("roundrobin", None),
           "lc": ("leastconn", None), "wlc": ("leastconn", None),
           "sh": ("source", None), "maglev": ("source", "consistent")}

DEFAULT_TIMEOUTS = {"connect": "5s", "client": "60s", "server": "60s",
                    "tunnel": "1h"}     # tunnel: idle TCP (DICOM), websocket

_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")    # RFC 9110 token
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_TIMEOUT_RE = re.compile(r"^[0-9]+(us|ms|s|m|h|d)?$")
_ALERT_RE = re.compile(r"^\[ALERT\]\s*\(\d+\)\s*:\s*(config\s*:\s*)?")


def sanitize(name):
    """A name HAProxy accepts everywhere: every other character becomes _."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(name)) or "_"


def server_name(real, default_port=None):
    """HAProxy's name for a pyfwd Real: `r_10_0_0_11_80`, stable per key.

    A real without a port takes `default_port` (the VIP's) in the name, so
    that `10.0.0.11` and `10.0.0.11:80` of an :80 VIP are the same server.
    """
    port = real.port or default_port
    host = str(real.address).replace(".", "_").replace(":", "_")
    return sanitize(f"r_{host}_{port}" if port else f"r_{host}")


def haproxy_weights(weights):
    """pyfwd weights (0..65535) -> HAProxy weights (0..256), same ratios.

    Unchanged when they all fit; otherwise scaled so the largest is 256, a
    non-zero weight never rounding down to 0 (0 means drained).
    """
    weights = list(weights)
    top = max(weights, default=0)
    if top <= HAPROXY_WEIGHT_MAX:
        return weights
    return [0 if w == 0 else max(1, round(w * HAPROXY_WEIGHT_MAX / top))
            for w in weights]


def _quote(value):
    """A double-quoted HAProxy config word: no env expansion, no splitting."""
    return '"' + (str(value).replace("\\", "\\\\").replace('"', '\\"')
                  .replace("$", "\\$")) + '"'


def _hostport(address, port):
    addr = ipaddress.ip_address(str(address))
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


# -- options ------------------------------------------------------------------

@dataclass(frozen=True)
class L7Options:
    """The L7 keys of a [[vip]] table.

    l7_mode: "http" or "tcp"; forwardfor: add X-Forwarded-For (http only,
    default on in http); cookie: name of an inserted persistence cookie
    (http only, None = off); tls_cert: PEM with certificate and key, TLS is
    terminated on the frontend (http only); send_proxy: PROXY protocol v2 to
    the real servers; set_headers / del_headers: request headers to set or
    remove (http only).  A set_headers value is an HAProxy log-format string:
    `%[src]` inserts the client address, `%%` is a literal percent sign.
    """

    l7_mode: str = "http"
    forwardfor: bool = True
    cookie: Optional[str] = None
    tls_cert: Optional[str] = None
    send_proxy: bool = False
    set_headers: tuple = ()     # ((name, value), ...), in config order
    del_headers: tuple = ()     # (name, ...)

    KEYS = ("l7_mode", "forwardfor", "cookie", "tls_cert", "send_proxy",
            "set_headers", "del_headers")

    @classmethod
    def from_dict(cls, d, where="vip"):
        """Parse the L7 keys of `d` (other keys are ignored: the caller's).

        `where` prefixes every message (e.g. "vip web").  Raises ConfigError
        naming the key, the value and what was expected.
        """
        def bad(key, value, expected):
            return ConfigError(f"{where}: {key} {value!r}: expected "
                               f"{expected}")

        mode = d.get("l7_mode", "http")
        if mode not in L7_MODES:
            raise bad("l7_mode", mode, "one of " + ", ".join(L7_MODES))
        http = mode == "http"

        def boolean(key, default):
            v = d.get(key, default)
            if not isinstance(v, bool):
                raise bad(key, v, "true or false")
            return v

        forwardfor = boolean("forwardfor", http)
        if forwardfor and not http:
            raise bad("forwardfor", forwardfor,
                      "false with l7_mode tcp (X-Forwarded-For is HTTP; use "
                      "send_proxy)")
        send_proxy = boolean("send_proxy", False)

        cookie = d.get("cookie")
        if cookie is not None:
            if not isinstance(cookie, str) or not _TOKEN_RE.match(cookie):
                raise bad("cookie", cookie, "a cookie name (letters, digits, "
                          "-, _ ...; no spaces or separators)")
            if not http:
                raise bad("cookie", cookie, "no cookie with l7_mode tcp")

        tls_cert = d.get("tls_cert")
        if tls_cert is not None:
            if not isinstance(tls_cert, str) or not tls_cert:
                raise bad("tls_cert", tls_cert, "the path of a PEM file "
                          "holding the certificate and its key")
            if not http:
                raise bad("tls_cert", tls_cert, "no tls_cert with l7_mode "
                          "tcp (TLS is terminated in http mode only)")
            if not os.path.isfile(tls_cert):
                raise bad("tls_cert", tls_cert, "an existing PEM file "
                          "(certificate and key)")

        set_headers = d.get("set_headers", {})
        if not isinstance(set_headers, dict):
            raise bad("set_headers", set_headers, "a table of header name = "
                      "value strings")
        for name, value in set_headers.items():
            if not isinstance(name, str) or not _TOKEN_RE.match(name):
                raise bad("set_headers", name, "a header name (a token: "
                          "letters, digits, -, ...)")
            if (not isinstance(value, str)
                    or any(c in value for c in "\r\n\0")):
                raise bad(f"set_headers.{name}", value, "a string without "
                          "CR, LF or NUL")

        del_headers = d.get("del_headers", [])
        if not isinstance(del_headers, (list, tuple)):
            raise bad("del_headers", del_headers, "a list of header names")
        for name in del_headers:
            if not isinstance(name, str) or not _TOKEN_RE.match(name):
                raise bad("del_headers", name, "a header name (a token: "
                          "letters, digits, -, ...)")
        if not http:
            for key, v in (("set_headers", set_headers),
                           ("del_headers", del_headers)):
                if v:
                    raise bad(key, v, f"no {key} with l7_mode tcp")

        return cls(l7_mode=mode, forwardfor=forwardfor, cookie=cookie,
                   tls_cert=tls_cert, send_proxy=send_proxy,
                   set_headers=tuple(set_headers.items()),
                   del_headers=tuple(del_headers))


@dataclass
class L7Vip:
    """One L7 VIP as HAProxy gets it: one `listen` section.

    name: the section's name (sanitized to [A-Za-z0-9_-]): the backend name
    of `HAProxy.set_state`; vip: anything with `.address` and `.port`
    (a pyfwd.model.Vip); reals: [(server_name, address, port, weight)] with
    pyfwd weights; scheduler: a pyfwd scheduler name; timeouts: overrides of
    DEFAULT_TIMEOUTS (connect, client, server, tunnel), HAProxy time values.
    """

    name: str
    vip: object
    reals: list = field(default_factory=list)
    scheduler: str = "rr"
    options: L7Options = field(default_factory=L7Options)
    timeouts: dict = field(default_factory=dict)

    @classmethod
    def from_service(cls, service, options=None):
        """From a model.Service: named by its label, servers by real key."""
        vip = service.vip
        return cls(name=sanitize(service.label), vip=vip,
                   reals=[(server_name(r, vip.port), r.address,
                           r.port or vip.port, r.weight)
                          for r in service.reals],
                   scheduler=service.scheduler,
                   options=options or L7Options())


def render(vips, runtime_socket):
    """HAProxy's configuration text for a list of L7Vip.

    Raises ConfigError for an unknown scheduler, a bad timeout, a bad weight,
    or two VIPs (or two servers of a VIP) with the same sanitized name.
    """
    out = [
        "# Written by pyfwd (engine/l7.py): pyfwd rewrites this file.",
        "global",
        "    master-worker",
        f"    stats socket {_quote(runtime_socket)} mode 600 level admin "
        "expose-fd listeners",
        # HAProxy's own messages (server state changes, alerts) to our pipe;
        # per-request logs (level info) are left out.
        "    log stderr format raw local0 notice",
        "",
        "defaults",
        "    log global",
    ]
    out += [f"    timeout {k} {v}" for k, v in DEFAULT_TIMEOUTS.items()]
    seen = set()
    for v in vips:
        name = sanitize(v.name)
        if name in seen:
            raise ConfigError(f"vip {v.name!r}: name {name!r} is taken by "
                              "another L7 VIP")
        seen.add(name)
        out += [""] + _render_vip(v, name)
    return "\n".join(out) + "\n"


def _render_vip(v, name):
    o = v.options
    where = f"vip {name}"
    if v.scheduler not in BALANCE:
        raise ConfigError(f"{where}: scheduler {v.scheduler!r}: expected one "
                          f"of {', '.join(BALANCE)}")
    balance, hash_type = BALANCE[v.scheduler]
    bind = f"    bind {_hostport(v.vip.address, v.vip.port)}"
    if o.tls_cert:
        bind += f" ssl crt {_quote(o.tls_cert)}"
    lines = [f"listen {name}", f"    mode {o.l7_mode}", bind,
             f"    balance {balance}"]
    if hash_type:
        lines.append(f"    hash-type {hash_type}")
    for key, value in v.timeouts.items():
        if key not in DEFAULT_TIMEOUTS or not isinstance(value, str) \
                or not _TIMEOUT_RE.match(value):
            raise ConfigError(f"{where}: timeout {key} = {value!r}: expected "
                              f"one of {', '.join(DEFAULT_TIMEOUTS)} = a "
                              "time like 5s, 500ms or 1h")
        lines.append(f"    timeout {key} {value}")
    if o.l7_mode == "http":
        if o.forwardfor:
            lines.append("    option forwardfor")
        if o.tls_cert:
            lines.append("    http-request set-header X-Forwarded-Proto https")
        for h in o.del_headers:
            lines.append(f"    http-request del-header {h}")
        for h, value in o.set_headers:
            lines.append(f"    http-request set-header {h} {_quote(value)}")
        if o.cookie:
            lines.append(f"    cookie {o.cookie} insert indirect nocache")
    names = set()
    for sname, _, _, w in v.reals:
        if (isinstance(w, bool) or not isinstance(w, int)
                or not 0 <= w <= 65535):
            raise ConfigError(f"{where}: server {sname} weight {w!r}: "
                              "expected an integer from 0 to 65535")
    weights = haproxy_weights(r[3] for r in v.reals)
    for (sname, address, port, _), weight in zip(v.reals, weights):
        sname = sanitize(sname)
        if sname in names:
            raise ConfigError(f"{where}: server {sname} listed twice")
        names.add(sname)
        line = (f"    server {sname} {_hostport(address, port)} "
                f"weight {weight}")
        if o.l7_mode == "http" and o.cookie:
            line += f" cookie {sname}"
        if o.send_proxy:
            line += " send-proxy-v2"
        lines.append(line)
    return lines


# -- the process --------------------------------------------------------------

# srv_op_state and srv_admin_state of `show servers state` (server.h)
OP_STATES = {0: "stopped", 1: "starting", 2: "running", 3: "stopping"}
_ADMIN_MAINT = 0x01 | 0x02 | 0x04 | 0x20 | 0x40     # forced, inherited,
_ADMIN_DRAIN = 0x08 | 0x10                          # config, dns, hostname


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


class HAProxy:
    """One HAProxy (master-worker, foreground) that pyfwd started.

    config_path: the file pyfwd writes (and removes on stop);
    runtime_socket: the admin socket of the workers; the master's CLI socket
    is `runtime_socket + ".master"` unless given.  Thread-safe: start,
    reload, ensure_running and stop hold one lock.
    """

    def __init__(self, config_path, runtime_socket, binary="haproxy",
                 master_socket=None, start_timeout=5.0, stale_after=1.0,
                 stop_grace=5.0):
        self.config_path = str(config_path)
        self.runtime_socket = str(runtime_socket)
        self.master_socket = str(master_socket or
                                 self.runtime_socket + ".master")
        self.binary = binary
        self.start_timeout = start_timeout
        self.stale_after = stale_after
        self.stop_grace = stop_grace
        self.restarts = 0
        self.proc = None            # the master: subprocess.Popen
        self.version = None
        self._text = None
        self._lines = collections.deque(maxlen=40)
        self._drain = None
        self._stale_since = None
        self._stopping = False
        self._lock = threading.RLock()

    # -- binary and config ---------------------------------------------------

    def check_binary(self):
        """HAProxy's version string (e.g. "2.6.12-1+deb12u4").

        Raises ConfigError when the binary is missing or older than 2.0.
        """
        path = shutil.which(self.binary)
        if path is None:
            raise ConfigError(f"HAProxy not found ({self.binary!r}): "
                              "apt-get install haproxy")
        try:
            r = subprocess.run([path, "-v"], capture_output=True, text=True,
                               timeout=10)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ConfigError(f"HAProxy {path}: cannot run it: {e}") from None
        m = re.search(r"version (\d+)\.(\d+)(\S*)", r.stdout + r.stderr)
        if m is None:
            raise ConfigError(f"HAProxy {path}: no version in its -v output: "
                              f"{(r.stdout + r.stderr).strip()[:200]!r}")
        version = m.group(1) + "." + m.group(2) + m.group(3)
        if (int(m.group(1)), int(m.group(2))) < MIN_VERSION:
            raise ConfigError(f"HAProxy {version}: expected version 2.0 or "
                              "later (master-worker reload, runtime API)")
        self.binary = path
        self.version = version
        return version

    def validate(self, text):
        """Check `text` with `haproxy -c`; raises ConfigError with HAProxy's
        message.  Writes nothing that stays."""
        tmp = self._write_temp(text)
        try:
            self._check(tmp)
        finally:
            _unlink(tmp)

    def _write_temp(self, text):
        d = os.path.dirname(os.path.abspath(self.config_path))
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".pyfwd-haproxy-",
                                   suffix=".cfg")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return tmp

    def _check(self, path):
        if self.version is None:
            self.check_binary()
        r = subprocess.run([self.binary, "-c", "-f", path],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            msg = (r.stdout + r.stderr).replace(path, self.config_path)
            lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
            alerts = [_ALERT_RE.sub("", ln) for ln in lines
                      if "ALERT" in ln] or lines
            raise ConfigError("HAProxy rejects the configuration: "
                              + " | ".join(alerts[-8:]))

    def _install(self, text):
        """Validate, then atomically replace config_path."""
        tmp = self._write_temp(text)
        try:
            self._check(tmp)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.config_path)
        except BaseException:
            _unlink(tmp)
            raise
        self._text = text

    # -- lifecycle -----------------------------------------------------------

    def running(self):
        """Whether the master process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, text):
        """Validate and write `text`, start HAProxy, wait for its worker.

        Raises ConfigError when HAProxy rejects the text, PyfwdError when
        it is already running or no worker answers within start_timeout
        (the message carries HAProxy's last lines).
        """
        with self._lock:
            if self.running():
                raise PyfwdError(f"HAProxy already running (pid "
                                 f"{self.proc.pid}): reload instead")
            self._install(text)
            try:
                self._spawn()
            except BaseException:
                self.proc, self._text = None, None
                _unlink(self.config_path)
                raise

    def _spawn(self):
        for p in (self.runtime_socket, self.master_socket):
            _unlink(p)      # a stale socket file of a dead run
        self._lines.clear()
        cmd = [self.binary, "-W", "-db", "-f", self.config_path,
               "-S", f"{self.master_socket},mode,600"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._drain = threading.Thread(target=self._drain_output,
                                       args=(self.proc,), daemon=True,
                                       name=f"haproxy-log-{self.proc.pid}")
        self._drain.start()
        log.info("HAProxy started: master pid %d", self.proc.pid)
        try:
            self._wait_worker(exclude=None)
        except PyfwdError:
            self._kill_group()
            raise
        self._stale_since = None

    def _drain_output(self, proc):
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            self._lines.append(line)
            if self._stopping:      # workers ending because we asked
                log.info("%s", line)
            elif "[ALERT]" in line:
                log.error("%s", line)
            elif "[WARNING]" in line:
                log.warning("%s", line)
            else:
                log.info("%s", line)
        proc.stdout.close()

    def _wait_worker(self, exclude):
        """Wait until a worker of our master, not `exclude`, answers, and
        the master's CLI too (it listens a few ms after the worker)."""
        deadline = time.monotonic() + self.start_timeout
        pid = None
        while True:
            if pid is None:
                pid = self.worker_pid()
                if pid == exclude:
                    pid = None
            if pid is not None:
                try:
                    self.master_cli("show proc", timeout=0.5)
                    return pid
                except PyfwdError:
                    pass
            if self.proc.poll() is not None:
                time.sleep(0.1)         # let the drain thread catch up
                raise PyfwdError(f"HAProxy exited with {self.proc.returncode}"
                                 ": " + " | ".join(list(self._lines)[-6:]))
            if time.monotonic() > deadline:
                raise PyfwdError(f"HAProxy: no worker answers on "
                                 f"{self.runtime_socket} after "
                                 f"{self.start_timeout:g} s: "
                                 + " | ".join(list(self._lines)[-6:]))
            time.sleep(0.05)

    def worker_pid(self):
        """The pid of the worker answering on the runtime socket, if it is
        a child of our master; else None."""
        if not self.running():
            return None
        try:
            info = self.runtime("show info", timeout=0.5)
        except PyfwdError:
            return None
        m = re.search(r"^Pid: (\d+)", info, re.M)
        if m is None:
            return None
        pid = int(m.group(1))
        return pid if _ppid(pid) == self.proc.pid else None

    def reload(self, text):
        """Validate and write `text`, then reload seamlessly (SIGUSR2 to the
        master): listeners pass to a new worker, established connections
        finish on the old one.  Returns once the new worker answers.

        Starts HAProxy when it is not running.  Raises ConfigError when
        HAProxy rejects the text (the running one is left as it was),
        PyfwdError when no new worker answers in time (the old one keeps
        serving).
        """
        with self._lock:
            if not self.running():
                self._install(text)
                self._spawn()
                return
            self._install(text)
            self._reload()

    def _reload(self):
        old = self.worker_pid()
        os.kill(self.proc.pid, signal.SIGUSR2)
        pid = self._wait_worker(exclude=old)
        self._stale_since = None
        log.info("HAProxy reloaded: worker %s -> %d", old, pid)

    def ensure_running(self):
        """The watchdog; call it every second or so.

        Restarts HAProxy with the last config when its master died, or when
        the master lives but no worker has answered for stale_after seconds
        (a hung worker: its connections are lost).  Returns True when it
        recovered something (counted in `restarts`), False otherwise; never
        raises PyfwdError (a failed restart is logged and retried on the
        next call).  May block ~0.5 s asking a silent runtime socket.
        """
        with self._lock:
            if self._text is None or self.proc is None:
                return False            # never started, or stopped
            try:
                if not self.running():
                    log.error("HAProxy master %d exited with %s (%s); "
                              "restarting", self.proc.pid,
                              self.proc.returncode,
                              " | ".join(list(self._lines)[-3:]))
                    self._kill_group()
                    self.restarts += 1
                    self._spawn()
                    return True
                if self.worker_pid() is not None:
                    self._stale_since = None
                    return False
                now = time.monotonic()
                if self._stale_since is None:
                    self._stale_since = now
                    return False
                if now - self._stale_since < self.stale_after:
                    return False
                # A reload is not enough: a hung worker keeps its listening
                # sockets (SO_REUSEPORT), so the kernel would still hand it
                # a share of new connections.  End the group, start again.
                log.error("HAProxy: no worker answered for %.1f s; "
                          "restarting", now - self._stale_since)
                self.restarts += 1
                self._stale_since = None
                self._kill_group(grace=1.0)
                self._spawn()
                return True
            except (PyfwdError, OSError) as e:
                log.error("HAProxy watchdog: recovery failed: %s", e)
                return False

    def stop(self):
        """SIGTERM the whole process group, SIGKILL after stop_grace
        seconds; remove the sockets and the config file.  Idempotent."""
        with self._lock:
            if self.proc is not None:
                self._kill_group()
                log.info("HAProxy stopped (master %d)", self.proc.pid)
            self.proc = None
            self._text = None
            for p in (self.runtime_socket, self.master_socket,
                      self.config_path):
                _unlink(p)

    def _kill_group(self, grace=None):
        """End our master's process group: TERM, then KILL; reap it."""
        proc = self.proc
        self._stopping = True
        pgid = proc.pid         # start_new_session: the master leads it
        if _group_alive(pgid):
            _killpg(pgid, signal.SIGTERM)
        grace = self.stop_grace if grace is None else grace
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()
            if proc.returncode is not None and not _group_alive(pgid):
                break
            time.sleep(0.05)
        else:
            log.warning("HAProxy group %d still alive after %.1f s: SIGKILL",
                        pgid, grace)
            _killpg(pgid, signal.SIGKILL)
        proc.wait()
        if self._drain is not None:
            self._drain.join(timeout=2)
        self._stopping = False

    # -- runtime API ---------------------------------------------------------

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


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
