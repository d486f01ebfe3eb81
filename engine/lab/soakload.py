"""The soak run's load: a process in the lab's client namespace that sends
requests through the VIPs for a while and writes what became of each.

    python -m pyfwd.lab.soakload SPEC.json OUT.json

SPEC is {"seconds": S, "streams": [...]}; a stream is one kind of client:

- ``http``: GET / at ``rate`` per second, with ``keepalive`` connections
  (``conns`` of them, each reopened after ``reuse`` requests) or a new
  connection per request (``Connection: close``);
- ``udp``: a datagram at ``rate`` per second from one socket (one flow),
  answered by the real's whoami;
- ``dicom``: storescu (dcmtk) storing ``files`` in one association, again
  and again: a long DICOM store.

Every request's outcome is kept: successes counted per (second, stream,
real) and failures one by one with what is known of them: when it started
and ended, the connection it was on (opened when, on which real as the
last answer said: None when no answer came on it), and the error.  OUT is
{"ok": [[second, stream, real, n], ...], "failures": [...]}; times are
CLOCK_MONOTONIC seconds, the clock the soak's other parts read.  SIGTERM
ends the run early; OUT is written either way.
"""

import collections
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

__all__ = ["Recorder", "parse_node", "main"]

TIMEOUT = 2.0           # s: one HTTP request or UDP answer
DICOM_TIMEOUT = 5       # s: storescu's connect, ACSE and DIMSE timeouts

_NODE = re.compile(r"node=(\S+)")


def parse_node(text):
    """The real's name in a whoami answer ("node=real1 ..."), or None."""
    m = _NODE.search(text)
    return m.group(1) if m else None


class Recorder:
    """Outcomes of every stream's requests, thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self.ok = collections.Counter()     # (second, stream, real) -> n
        self.failures = []

    def success(self, stream, t, node):
        with self._lock:
            self.ok[int(t), stream, node] += 1

    def failure(self, stream, vip, t, t_end, node, conn_t, error):
        with self._lock:
            self.failures.append({
                "t": round(t, 3), "t_end": round(t_end, 3),
                "stream": stream, "vip": vip, "real": node,
                "conn_t": None if conn_t is None else round(conn_t, 3),
                "error": error})

    def to_dict(self):
        with self._lock:
            return {"ok": [[s, st, node, n] for (s, st, node), n
                           in sorted(self.ok.items(),
                                     key=lambda kv: (kv[0][0], kv[0][1]))],
                    "failures": list(self.failures)}


def _why(exc):
    return f"{type(exc).__name__}: {exc}"[:200]


class _Pacer:
    """Sleep so that calls come at `rate` per second; catch up no more
    than one second's worth after a stall."""

    def __init__(self, rate, stop):
        self.period = 1.0 / rate
        self.stop = stop
        self.next = time.monotonic()

    def wait(self):
        self.next += self.period
        now = time.monotonic()
        if self.next < now - 1.0:
            self.next = now
        return not self.stop.wait(max(0.0, self.next - now))


class _HttpConn:
    """One client connection: the real that last answered on it."""

    def __init__(self, host, port):
        self.conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        self.opened = None
        self.node = None
        self.used = 0


def http_stream(st, rec, stop):
    """GET / through the VIP at st["rate"] per second (see the module)."""
    name, vip = st["name"], st["vip"]
    keep = st.get("keepalive", False)
    conns = [None] * (st.get("conns", 1) if keep else 1)
    reuse = st.get("reuse", 100)
    pacer, k = _Pacer(st["rate"], stop), 0
    while pacer.wait():
        k = (k + 1) % len(conns)
        c = conns[k]
        if c is None or not keep or c.used >= reuse:
            if c is not None:
                c.conn.close()
            c = conns[k] = _HttpConn(st["host"], st["port"])
        t = time.monotonic()
        try:
            if c.opened is None:
                c.conn.connect()
                c.opened = time.monotonic()
            c.conn.request("GET", "/", headers={} if keep else
                           {"Connection": "close"})
            resp = c.conn.getresponse()
            body = resp.read().decode(errors="replace")
            if resp.status != 200:
                raise http.client.HTTPException(f"status {resp.status}")
            c.node = parse_node(body) or c.node
            c.used += 1
            rec.success(name, t, c.node)
        except (OSError, http.client.HTTPException) as exc:
            rec.failure(name, vip, t, time.monotonic(), c.node,
                        c.opened or t, _why(exc))
            c.conn.close()
            conns[k] = None
    for c in conns:
        if c is not None:
            c.conn.close()


def udp_stream(st, rec, stop):
    """A datagram at st["rate"] per second from one socket (one flow);
    the answer names the real.  A missing answer is a failure on the
    real that last answered."""
    name, vip = st["name"], st["vip"]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    opened, node, pacer, seq = time.monotonic(), None, _Pacer(st["rate"],
                                                              stop), 0
    try:
        while pacer.wait():
            seq += 1
            t = time.monotonic()
            # the answer says the datagram's length: one of 1,000
            # lengths per datagram tells a late answer from this one's
            size = 16 + seq % 1000
            try:
                sock.sendto(b"s" * size, (st["host"], st["port"]))
                while True:     # skip late answers to earlier datagrams
                    data = sock.recv(2048).decode(errors="replace")
                    if f"len={size}\n" in data:
                        break
                node = parse_node(data) or node
                rec.success(name, t, node)
            except OSError as exc:
                rec.failure(name, vip, t, time.monotonic(), node, opened,
                            _why(exc))
    finally:
        sock.close()


def dicom_stream(st, rec, stop):
    """storescu storing st["files"] in one association, again and again;
    each association is one request (its real is not known: None)."""
    name, vip = st["name"], st["vip"]
    argv = [st.get("storescu", "/usr/bin/storescu"), "-aec", "SOAK",
            "-to", str(DICOM_TIMEOUT), "-ta", str(DICOM_TIMEOUT),
            "-td", str(DICOM_TIMEOUT)]
    if st.get("repeat"):
        argv += ["--repeat", str(st["repeat"])]
    argv += [st["host"], str(st["port"]), *st["files"]]
    while not stop.is_set():
        t = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        limit = t + st.get("timeout", 120)
        while proc.poll() is None and not stop.is_set() \
                and time.monotonic() < limit:
            stop.wait(0.2)
        if proc.poll() is None:         # the run ended, or too long
            proc.kill()
            proc.wait()
            if stop.is_set():
                break                   # cut by the end: not a result
            rec.failure(name, vip, t, time.monotonic(), None, t,
                        "storescu: timed out")
            continue
        said = proc.stderr.read().strip().splitlines()
        proc.stderr.close()
        if proc.returncode == 0:
            rec.success(name, t, None)
        else:
            rec.failure(name, vip, t, time.monotonic(), None, t,
                        f"storescu exit {proc.returncode}: "
                        f"{(said or [''])[-1]}"[:200])
            stop.wait(0.2)


_KINDS = {"http": http_stream, "udp": udp_stream, "dicom": dicom_stream}


def run(spec, rec, stop):
    """Run every stream of spec until spec["seconds"] pass or stop is
    set; returns rec."""
    threads = [threading.Thread(target=_KINDS[st["kind"]],
                                args=(st, rec, stop), name=st["name"],
                                daemon=True) for st in spec["streams"]]
    for th in threads:
        th.start()
    stop.wait(spec["seconds"])
    stop.set()
    for th in threads:
        th.join(DICOM_TIMEOUT * 3 + TIMEOUT)
    return rec


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.exit("usage: python -m pyfwd.lab.soakload SPEC.json OUT.json")
    with open(argv[0]) as f:
        spec = json.load(f)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("soakload running", flush=True)
    rec = run(spec, Recorder(), stop)
    with open(argv[1] + ".tmp", "w") as f:
        json.dump(rec.to_dict(), f)
    os.replace(argv[1] + ".tmp", argv[1])


if __name__ == "__main__":
    main()
