"""The control socket: `pyfwd ctl` talks to a running engine through it.

A unix stream socket (mode 0600, so only the engine's user, normally root,
may use it).  One JSON object per line each way:

    -> {"cmd": "weight", "vip": "pacs-web", "real": "10.0.0.11", "weight": 50}
    <- {"ok": true, "result": null}
    -> {"cmd": "drain", "vip": "pacs-web"}
    <- {"ok": false, "error": "drain: missing field 'real' (expects: ...)"}

A connection may carry any number of requests; the replies come in order.
`COMMANDS` (control.protocol) lists the commands, their fields and what
they do ({"cmd": "help"} returns the same list).  Calls into the engine are serialized: one
request at a time changes or reads it; `status`, `ha` and `ha-renew`
excepted, which answer at once even while a reload waits for ARP
(keepalived calls them: a failover or the engine check must not wait).

Bad input is answered, never fatal: a line that is not a JSON object, an
unknown command or field, a field of the wrong type get an error reply
naming the problem; so does an engine method raising PyfwdError (its
message).  Any other exception from the engine is a bug: it is logged with
its traceback, answered "internal error: ..." and the server carries on.  A
line over MAX_LINE bytes is answered with an error and the connection
closed; so is a connection idle for longer than its timeout.

    server = ControlServer(engine, "/run/pyfwd/pyfwd.sock").start()
    request("/run/pyfwd/pyfwd.sock", "show")      # -> list of VIP dicts
    server.stop()
"""

import errno
import json
import logging
import os
import selectors
import socket
import stat
import threading
import time

from ..errors import PyfwdError
from .protocol import (COMMANDS, BadRequest, help_result, parse_request,
                       short)

log = logging.getLogger("pyfwd.control.server")

DEFAULT_PATH = "/run/pyfwd/pyfwd.sock"
MAX_LINE = 64 * 1024        # bytes in one request line, newline excluded
IDLE_TIMEOUT = 300.0        # seconds a connection may stay silent
MAX_CLIENTS = 64            # connections served at once; more are refused
BACKLOG = 128               # connections waiting for accept()


def _one_line(text):
    return " ".join(str(text).split()) or "error"


class ControlServer:
    """Serves the control protocol for `engine` on a unix socket at `path`.

    engine: an object with the methods named in COMMANDS (status,
    views.show, views.stats, views.rate, views.zero, views.flows,
    add_vip, del_vip, add_real, del_real, set_weight, drain, halt,
    online, reload, set_role, renew_lease); each returns JSON-ready data
    and raises PyfwdError for a bad request.  The serialized commands run
    one at a time; the others (status, ha, ha-renew) at once, beside
    them.  start() binds and serves in background threads (one per
    connection); stop() closes every connection and removes the socket.
    """

    def __init__(self, engine, path=DEFAULT_PATH, *, idle_timeout=IDLE_TIMEOUT,
                 max_clients=MAX_CLIENTS):
        self.engine = engine
        self.path = os.fspath(path)
        self.idle_timeout = idle_timeout
        self.max_clients = max_clients
        self._engine_lock = threading.Lock()
        self._conns = {}                # socket -> thread
        self._conns_lock = threading.Lock()
        self._listener = None
        self._wake_r = self._wake_w = None
        self._thread = None
        self._ino = None
        self._stopping = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # --- set-up -------------------------------------------------------

    def start(self):
        """Bind, listen and serve in a background thread; returns self.

        Creates the socket's directory (0700) if missing; replaces a stale
        socket file.  Raises PyfwdError when an engine already listens at
        the path, the path is something else than a socket, or binding
        fails.
        """
        if self._listener is not None:
            raise PyfwdError(f"control socket {self.path}: already started")
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise PyfwdError(f"control socket directory {parent}: "
                             f"{exc.strerror}") from None
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            # Before listen(): until then a connect() is refused, so there
            # is no moment when others could connect.
            os.chmod(self.path, 0o600)
            self._ino = os.stat(self.path).st_ino
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            raise PyfwdError(f"control socket {self.path}: "
                             f"{exc.strerror or exc}") from None
        self._listener = sock
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._thread = threading.Thread(target=self._accept_loop,
                                        name="pyfwd-control", daemon=True)
        self._thread.start()
        log.info("control socket at %s", self.path)
        return self

    def _remove_stale(self):
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise PyfwdError(f"control socket {self.path}: "
                             f"{exc.strerror}") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise PyfwdError(f"control socket {self.path}: the path exists "
                             "and is not a socket; remove it or choose "
                             "another --socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except (ConnectionRefusedError, FileNotFoundError):
            pass                        # stale: nobody listens
        except OSError as exc:
            raise PyfwdError(f"control socket {self.path}: cannot tell "
                             f"whether an engine listens on it "
                             f"({exc.strerror or exc})") from None
        else:
            raise PyfwdError(f"control socket {self.path}: another pyfwd "
                             "engine listens on it; stop it or choose "
                             "another --socket")
        finally:
            probe.close()
        log.info("removing stale control socket %s", self.path)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def stop(self):
        """Stop serving: close the listener and every connection, remove
        the socket file (if it is still ours).  Idempotent."""
        if self._listener is None:
            return
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(5.0)
        with self._conns_lock:
            conns = list(self._conns.items())
        for conn, _ in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in conns:
            thread.join(2.0)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        self._listener = None
        try:
            if os.stat(self.path).st_ino == self._ino:
                os.unlink(self.path)
        except OSError:
            pass

    # --- serving ------------------------------------------------------

    def _accept_loop(self):
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping:
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r or self._stopping:
                        return
                    try:
                        conn, _ = self._listener.accept()
                    except OSError as exc:
                        # EMFILE and the like: log, back off a little
                        log.warning("control socket: accept: %s", exc)
                        time.sleep(0.1)
                        continue
                    self._admit(conn)

    def _admit(self, conn):
        with self._conns_lock:
            if len(self._conns) >= self.max_clients:
                full = True
            else:
                full = False
                thread = threading.Thread(target=self._serve, args=(conn,),
                                          name="pyfwd-control-conn",
                                          daemon=True)
                self._conns[conn] = thread
        if full:
            log.warning("control socket: %d connections already, refusing "
                        "one more", self.max_clients)
            try:
                conn.settimeout(1.0)
                conn.sendall(_reply_error(f"too many connections (at most "
                                          f"{self.max_clients})"))
            except OSError:
                pass
            conn.close()
            return
        thread.start()

    def _serve(self, conn):
        try:
            conn.settimeout(self.idle_timeout)
            buf = bytearray()
            while not self._stopping:
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > MAX_LINE:
                        conn.sendall(_reply_error(
                            f"request line over {MAX_LINE} bytes; closing "
                            "the connection"))
                        return
                    try:
                        data = conn.recv(65536)
                    except TimeoutError:
                        log.debug("control socket: closing a connection "
                                  "idle for %ss", self.idle_timeout)
                        return
                    if not data:
                        return          # closed, maybe mid-line: fine
                    buf += data
                    continue
                line = bytes(buf[:nl])
                del buf[:nl + 1]
                if len(line) > MAX_LINE:
                    conn.sendall(_reply_error(
                        f"request line over {MAX_LINE} bytes; closing the "
                        "connection"))
                    return
                if not line.strip():
                    continue            # blank lines (interactive use)
                conn.sendall(self.handle_line(line))
        except OSError as exc:          # peer gone, send timed out, stop()
            log.debug("control socket: connection ended: %s", exc)
        finally:
            with self._conns_lock:
                self._conns.pop(conn, None)
            conn.close()

    def handle_line(self, line):
        """One request line (bytes) -> its reply line (bytes, with the
        newline).  Never raises an Exception."""
        try:
            cmd, args = parse_request(line)
        except BadRequest as exc:
            return _reply_error(str(exc))
        return self.handle(cmd, args)

    def handle(self, cmd, args):
        """Run a parsed command -> reply line (bytes)."""
        command = COMMANDS[cmd]
        try:
            if command.method is None:
                result = help_result()
            elif not command.serialized:
                result = _method(self.engine, command.method)(*args)
            else:
                with self._engine_lock:
                    result = _method(self.engine, command.method)(*args)
            return _reply({"ok": True, "result": result})
        except PyfwdError as exc:
            return _reply_error(str(exc))
        except Exception as exc:        # a bug: say so, keep serving
            log.exception("control command %r failed", cmd)
            return _reply_error(f"internal error: {type(exc).__name__}: "
                                f"{exc}")


def _method(engine, name):
    """The engine's method `name`, or for `part.name` its part's."""
    target = engine
    for attr in name.split("."):
        target = getattr(target, attr)
    return target


def _reply(obj):
    try:
        text = json.dumps(obj, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        log.error("control reply is not JSON-ready: %s", exc)
        text = json.dumps({"ok": False, "error": _one_line(
            f"internal error: the reply is not JSON: {exc}")})
    return text.encode() + b"\n"


def _reply_error(message):
    return _reply({"ok": False, "error": _one_line(message)})


# --- client -----------------------------------------------------------------

class Client:
    """A connection to an engine's control socket; call() sends one request
    and returns its result.  Raises PyfwdError with the engine's error
    message, or saying why the engine cannot be reached.

        with Client("/run/pyfwd/pyfwd.sock") as c:
            c.call("weight", vip="pacs-web", real="10.0.0.11", weight=0)
    """

    def __init__(self, path=DEFAULT_PATH, timeout=5.0):
        self.path = os.fspath(path)
        self.timeout = timeout
        self._buf = bytearray()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock.connect(self.path)
                break
            except BlockingIOError:
                # a unix socket's backlog is full: connect() with a
                # timeout does not wait for room, so wait here
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                self._sock.close()
                raise PyfwdError(f"pyfwd engine at {self.path}: busy, "
                                 f"not accepting within {timeout:g}s") \
                    from None
            except OSError as exc:
                self._sock.close()
                raise PyfwdError(_connect_error(self.path, exc)) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        self._sock.close()

    def call(self, cmd, **args):
        """Send {"cmd": cmd, **args}; return the reply's result."""
        line = json.dumps({"cmd": cmd, **args}).encode() + b"\n"
        try:
            try:
                self._sock.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                # the engine closed first; it may have said why ("too
                # many connections"), and that is still ours to read
                pass
            reply = self._read_line()
        except TimeoutError:
            raise PyfwdError(f"pyfwd engine at {self.path}: no reply within "
                             f"{self.timeout:g}s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise PyfwdError(f"pyfwd engine at {self.path} closed the "
                             "connection without replying") from None
        except OSError as exc:
            raise PyfwdError(f"pyfwd engine at {self.path}: "
                             f"{exc.strerror or exc}") from None
        try:
            obj = json.loads(reply)
            ok = obj["ok"]
        except (ValueError, TypeError, KeyError):
            raise PyfwdError(f"pyfwd engine at {self.path}: unreadable "
                             f"reply {short(reply)}") from None
        if not ok:
            raise PyfwdError(str(obj.get("error", "error")))
        return obj.get("result")

    def _read_line(self):
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[:nl + 1]
                return line
            data = self._sock.recv(65536)
            if not data:
                raise PyfwdError(f"pyfwd engine at {self.path} closed the "
                                 "connection without replying")
            self._buf += data


def _connect_error(path, exc):
    if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR):
        return f"no pyfwd engine at {path} (is it running? --socket?)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"{path}: permission denied (the control socket is only "
                "for the engine's user; try sudo)")
    if isinstance(exc, TimeoutError):
        return f"pyfwd engine at {path}: connecting timed out"
    return f"pyfwd engine at {path}: {exc.strerror or exc}"


def request(path, cmd, timeout=5.0, **args):
    """Send one request to the engine at `path`; return its result.

    Raises PyfwdError: the engine's error message, or why no engine could
    be reached ("no pyfwd engine at PATH (is it running? --socket?)",
    permission denied, no reply within `timeout` seconds).
    """
    with Client(path, timeout) as client:
        return client.call(cmd, **args)
