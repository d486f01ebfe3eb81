"""The HAProxy process: one master-worker HAProxy tree that pyfwd starts,
reloads seamlessly, watches and stops (its runtime API: runtime.py).

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

What happens when pyfwd dies (SIGKILL included): the master is forked with
a parent-death signal (PR_SET_PDEATHSIG, SIGTERM).  The kernel sends it when
the *thread* that forked ends, so every fork of one HAProxy happens in one
thread of its own (control.spawner.Spawner, in the namespace of the thread
that first started it), which lives until stop() has ended the group: the
signal comes when pyfwd's process dies, not when a control request's
thread ends.  The master's SIGTERM ends its workers; a worker whose master
was SIGKILLed leaves too (the master-worker pipe closes).  A pid file (`-p`) lets the
next start end an HAProxy that outlived its pyfwd anyway (clear_leftovers).
"""

import collections
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from .runtime import RuntimeApi
from ..spawner import Spawner
from ...errors import ConfigError, PyfwdError

log = logging.getLogger("pyfwd.haproxy")

MIN_VERSION = (2, 0)

_ALERT_RE = re.compile(r"^\[ALERT\]\s*\(\d+\)\s*:\s*(config\s*:\s*)?")


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


class HAProxy(RuntimeApi):
    """One HAProxy (master-worker, foreground) that pyfwd started, with its
    runtime API (RuntimeApi: set_state, set_weight, stats ...).

    config_path: the file pyfwd writes (and removes on stop);
    runtime_socket: the admin socket of the workers; the master's CLI socket
    is `runtime_socket + ".master"` unless given; pid_file (HAProxy's -p,
    the master's pid): config_path with ".pid" for ".cfg".  Thread-safe:
    start, reload, ensure_running and stop hold one lock.
    """

    def __init__(self, config_path, runtime_socket, binary="haproxy",
                 master_socket=None, start_timeout=5.0, stale_after=1.0,
                 stop_grace=5.0):
        super().__init__(runtime_socket, master_socket)
        self.config_path = str(config_path)
        self.pid_file = re.sub(r"(\.cfg)?$", ".pid", self.config_path,
                               count=1)
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
        self._spawner = None
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
                if self._spawner is not None:
                    self._spawner.close()
                    self._spawner = None
                raise

    def clear_leftovers(self):
        """End an HAProxy that a dead pyfwd left running with our config
        file (its pid file says which), and remove the pid file and the
        sockets it left.  Returns the pid ended, or None.  Never raises for
        what is not there."""
        with self._lock:
            pid = None
            try:
                with open(self.pid_file) as f:
                    pid = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
            ended = None
            if pid and pid != (self.proc and self.proc.pid):
                cmd = _cmdline(pid)
                if cmd and "haproxy" in os.path.basename(cmd[0]) and \
                        self.config_path in cmd:
                    log.warning("HAProxy %d of an earlier pyfwd still runs "
                                "with %s: ending it", pid, self.config_path)
                    _end_group(pid, grace=2.0)
                    ended = pid
            for p in (self.pid_file, self.runtime_socket,
                      self.master_socket):
                _unlink(p)
            return ended

    def _spawn(self):
        self.clear_leftovers()
        self._lines.clear()
        cmd = [self.binary, "-W", "-db", "-f", self.config_path,
               "-p", self.pid_file, "-S", f"{self.master_socket},mode,600"]
        if self._spawner is None:
            self._spawner = Spawner("pyfwd-haproxy-spawner")
        try:
            self.proc = self._spawner.popen(cmd, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT,
                                            start_new_session=True)
        except (OSError, subprocess.SubprocessError) as exc:
            raise PyfwdError(f"HAProxy: cannot start {self.binary}: "
                             f"{exc}") from None
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
            if self._spawner is not None:
                self._spawner.close()
                self._spawner = None
            for p in (self.runtime_socket, self.master_socket,
                      self.config_path, self.pid_file):
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


def _end_group(pgid, grace):
    """TERM a process group that is not our child, KILL it after grace."""
    _killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _running(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _running(pgid):
        _killpg(pgid, signal.SIGKILL)


def _running(pid):
    """pid exists and is no zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


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


__all__ = ["MIN_VERSION", "HAProxy"]
