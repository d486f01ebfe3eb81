"""The BIRD 2 process of one engine: started, reconfigured, watched and
stopped by pyfwd, never outliving it.

BIRD runs in the foreground (`bird -f`) as the engine's child, in the
engine's network namespace, with its own config file, control socket and
pid file under pyfwd's run dir.  It is forked from one thread that lives
as long as the process (control.l7.haproxy's spawner) with a parent-death
SIGTERM (PR_SET_PDEATHSIG): when the engine dies, SIGKILL included, the
kernel sends BIRD SIGTERM, and BIRD closes its sessions with a Cease
notification, so the router withdraws the VIPs at once; a node that
vanishes whole (power, link) is withdrawn when the router's hold timer
runs out (hold_time).

A change of what to announce is `configure` on the control socket (BIRD
restarts only the protocols whose text changed: the sessions stay up).
"""

import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time

from .birdsock import BirdError, BirdSocket
from ..spawner import Spawner
from ...errors import ConfigError, PyfwdError

log = logging.getLogger("pyfwd.bgp")


class Bird:
    """One BIRD: config_path (written by pyfwd), control_socket, pid file
    beside the config.  Thread-safe (one lock)."""

    def __init__(self, config_path, control_socket, binary="bird",
                 start_timeout=5.0):
        self.config_path = str(config_path)
        self.control_socket = str(control_socket)
        self.pid_file = self.config_path.rsplit(".", 1)[0] + ".pid"
        self.binary = binary
        self.start_timeout = start_timeout
        self.sock = BirdSocket(self.control_socket)
        self.proc = None
        self.restarts = 0
        self._text = None
        self._spawner = None
        self._lock = threading.RLock()

    def check_binary(self):
        """The path of bird; ConfigError when it is not installed."""
        path = shutil.which(self.binary)
        if path is None:
            raise ConfigError(f"BIRD not found ({self.binary!r}): apt-get "
                              "install bird2")
        self.binary = path
        return path

    def validate(self, text):
        """`bird -p` (parse only) on text; ConfigError with BIRD's
        message."""
        self.check_binary()
        d = os.path.dirname(os.path.abspath(self.config_path))
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".pyfwd-bird-",
                                   suffix=".conf")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            r = subprocess.run([self.binary, "-p", "-c", tmp],
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                msg = (r.stdout + r.stderr).replace(tmp, self.config_path)
                raise ConfigError("BIRD rejects the configuration: "
                                  + " | ".join(msg.split("\n")[-4:]).strip())
        finally:
            _unlink(tmp)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, text):
        """Write text, start BIRD, wait until its control socket answers.
        PyfwdError (with BIRD's output) when it does not."""
        with self._lock:
            self.validate(text)
            self._write(text)
            self._spawn()

    def _write(self, text):
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.config_path)
        self._text = text

    def clear_leftovers(self):
        """End a BIRD that a dead pyfwd left with our files (its pid file
        says which); remove the socket and pid file."""
        try:
            with open(self.pid_file) as f:
                pid = int(f.read().split()[0])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            if self.config_path.encode() in cmd:
                log.warning("BIRD %d of an earlier pyfwd still runs: "
                            "ending it", pid)
                os.kill(pid, 15)
                time.sleep(0.2)
        except (OSError, ValueError, IndexError):
            pass
        for p in (self.pid_file, self.control_socket):
            _unlink(p)

    def _spawn(self):
        self.clear_leftovers()
        cmd = [self.binary, "-f", "-c", self.config_path,
               "-s", self.control_socket, "-P", self.pid_file]
        if self._spawner is None:
            self._spawner = Spawner("pyfwd-bird-spawner")
        try:
            self.proc = self._spawner.popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True)
        except (OSError, subprocess.SubprocessError) as exc:
            raise PyfwdError(f"BIRD: cannot start {self.binary}: "
                             f"{exc}") from None
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True,
                         name=f"bird-log-{self.proc.pid}").start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self.sock.call("show status")
                break
            except BirdError as exc:
                if not self.running() or time.monotonic() > deadline:
                    self._kill()
                    raise PyfwdError(f"BIRD did not start: {exc}") from None
                time.sleep(0.05)
        log.info("BIRD started: pid %d, control socket %s", self.proc.pid,
                 self.control_socket)

    def _drain(self, proc):
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                log.info("bird: %s", line)

    def configure(self, text):
        """Install text and have BIRD apply it (sessions whose text is
        the same stay up).  BirdError when BIRD refuses it."""
        with self._lock:
            if text == self._text and self.running():
                return False
            self._write(text)
            if self.running():
                self.sock.call("configure")
            return True

    def ensure_running(self):
        """Start BIRD again with the last config if it died; True if it
        did (logged, counted in restarts)."""
        with self._lock:
            if self._text is None or self.running():
                return False
            log.error("BIRD (pid %s) exited with %s: starting it again",
                      self.proc.pid if self.proc else None,
                      self.proc.returncode if self.proc else None)
            self.restarts += 1
            self._spawn()
            return True

    def stop(self, grace=3.0):
        """SIGTERM (BIRD sends Cease to its peers), SIGKILL after grace;
        removes its files.  Idempotent."""
        with self._lock:
            self._kill(grace)
            self._text = None
            for p in (self.config_path, self.pid_file, self.control_socket):
                _unlink(p)
            if self._spawner is not None:
                self._spawner.close()
                self._spawner = None

    def _kill(self, grace=3.0):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(2)
        self.proc = None


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


__all__ = ["Bird"]
