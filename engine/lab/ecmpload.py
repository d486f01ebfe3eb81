"""The ECMP lab's load: long-lived connections that talk all the time.

    python -m pyfwd.lab.ecmpload serve NAME PORT
        an echo server on every real server: each line comes back as
        "NAME LINE", so the client knows which real answered;
    python -m pyfwd.lab.ecmpload hold VIP PORT N SECONDS
        N connections to VIP:PORT, each sending a line every INTERVAL
        and reading the answer, for SECONDS; then one JSON object on
        stdout: per connection the reals that answered, the exchanges
        done, the error that ended it ("reset", "closed", "stalled"), the
        monotonic time of its last answer; and "t0", the clock at start.

A connection is alive at the end when it met no error and its last answer
came within STALL seconds.
"""

import json
import selectors
import socket
import sys
import time

INTERVAL = 0.1
STALL = 2.0


def serve(name, port):
    sel = selectors.DefaultSelector()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("0.0.0.0", port))
    lsock.listen(1024)
    sel.register(lsock, selectors.EVENT_READ)
    bufs = {}
    print("listening", flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is lsock:
                c, _ = lsock.accept()
                c.setblocking(False)
                bufs[c] = b""
                sel.register(c, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                bufs.pop(s, None)
                s.close()
                continue
            buf = bufs[s] + data
            *lines, bufs[s] = buf.split(b"\n")
            try:
                s.sendall(b"".join(name.encode() + b" " + ln + b"\n"
                                   for ln in lines))
            except OSError:
                pass


def hold(vip, port, n, seconds):
    conns = []
    t0 = time.monotonic()
    for _ in range(n):
        s = socket.create_connection((vip, port), timeout=5)
        s.setblocking(False)
        conns.append({"sock": s, "buf": b"", "reals": [], "ok": 0,
                      "error": None, "last": time.monotonic(),
                      "sent": 0})
    sel = selectors.DefaultSelector()
    for i, c in enumerate(conns):
        sel.register(c["sock"], selectors.EVENT_READ, i)
    end = time.monotonic() + seconds
    tick = time.monotonic()
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= tick:
            tick = now + INTERVAL
            for c in conns:
                if c["error"] is None:
                    try:
                        c["sock"].send(f"{c['sent']}\n".encode())
                        c["sent"] += 1
                    except OSError as exc:
                        _fail(sel, c, exc)
        for key, _ in sel.select(max(0.0, tick - time.monotonic())):
            c = conns[key.data]
            try:
                data = c["sock"].recv(4096)
            except OSError as exc:
                _fail(sel, c, exc)
                continue
            if not data:
                _fail(sel, c, None)
                continue
            *lines, c["buf"] = (c["buf"] + data).split(b"\n")
            for ln in lines:
                real = ln.split(b" ", 1)[0].decode()
                if not c["reals"] or c["reals"][-1] != real:
                    c["reals"].append(real)
                c["ok"] += 1
                c["last"] = time.monotonic()
    now = time.monotonic()
    for c in conns:
        if c["error"] is None and now - c["last"] > STALL:
            c["error"] = "stalled"
        c["sock"].close()
    print(json.dumps({"t0": t0, "end": now, "connections": [
        {k: c[k] for k in ("reals", "ok", "error", "last")}
        for c in conns]}), flush=True)


def _fail(sel, c, exc):
    c["error"] = ("reset" if isinstance(exc, ConnectionResetError) else
                  "closed" if exc is None else type(exc).__name__)
    try:
        sel.unregister(c["sock"])
    except (KeyError, ValueError):
        pass


def main(argv):
    if argv[0] == "serve":
        serve(argv[1], int(argv[2]))
    elif argv[0] == "hold":
        hold(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))
    else:
        raise SystemExit("usage: serve NAME PORT | hold VIP PORT N SECONDS")


if __name__ == "__main__":
    main(sys.argv[1:])
