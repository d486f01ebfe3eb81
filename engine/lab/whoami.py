"""A tiny HTTP server that says who answered and whom it saw.

Real servers in the lab and in end-to-end tests run it to show what a load
balancer did to a connection: which real server took it, which client
address reached it (DR and NAT keep the client's, SNAT shows the
balancer's) and to which local address it was sent (the VIP in DR).

    python -m pyfwd.lab.whoami --bind 10.0.0.11 --port 80 --name real1

GET /          -> "node=real1 client=10.0.0.1:40312 local=10.0.0.100:80\\n"
                  (plus " xff=..." when a proxy sent X-Forwarded-For)
GET /bytes/N   -> N bytes of payload (for transfer tests), N <= 1 GiB
GET /bytes/N?rate=R -> the same, sent at R bytes per second at most (a
                  download that lasts, whatever the client's buffers)
"""

import argparse
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNK = 64 * 1024
MAX_BYTES = 1 << 30


def command(port, name, bind="0.0.0.0", udp=None, udp_bind=None):
    """The argv that runs this server with this interpreter, as the lab's
    real servers run it: listening on ``bind``:``port`` (every address by
    default, so DR's packets for the VIP on lo reach it too), saying
    ``name``, and answering UDP on port ``udp`` if given (on ``udp_bind``,
    if given).  It prints one "... listening on ..." line once it
    listens."""
    argv = [sys.executable, "-m", "pyfwd.lab.whoami", "--bind", bind,
            "--port", str(port), "--name", name]
    if udp:
        argv += ["--udp", str(udp)]
    if udp_bind:
        argv += ["--udp-bind", udp_bind]
    return argv


class WhoamiHandler(BaseHTTPRequestHandler):
    server_version = "pyfwd-whoami/1"
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/bytes/"):
            url = urlsplit(self.path)
            rate = parse_qs(url.query).get("rate", ["0"])[0]
            return self._bytes(url.path[len("/bytes/"):], rate)
        client = "%s:%d" % self.client_address[:2]
        local = "%s:%d" % self.connection.getsockname()[:2]
        xff = self.headers.get("X-Forwarded-For")
        body = (f"node={self.server.node} client={client} local={local}"
                + (f" xff={xff}" if xff else "") + "\n").encode()
        self._reply(200, body)

    def _bytes(self, count, rate="0"):
        if not count.isdigit() or int(count) > MAX_BYTES:
            return self._reply(400, b"expected /bytes/N, N <= 1 GiB\n")
        if not rate.isdigit():
            return self._reply(400, b"expected ?rate=BYTES_PER_SECOND\n")
        left, rate = int(count), int(rate)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(left))
        self.send_header("X-Node", self.server.node)
        self.end_headers()
        block = b"\xa5" * CHUNK
        # paced: chunks of a tenth of a second's worth, each on its time
        chunk = max(1, min(CHUNK, rate // 10)) if rate else CHUNK
        start, sent = time.monotonic(), 0
        while left:
            n = min(left, chunk)
            self.wfile.write(block[:n])
            left -= n
            sent += n
            if rate:
                ahead = start + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)

    def _reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Node", self.server.node)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s %s\n" % (self.server.node, fmt % args))


class WhoamiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 overflows under a burst of new
    # connections, and the kernel then makes clients wait to retransmit.
    request_queue_size = 1024

    def __init__(self, address, node, verbose=False):
        self.node = node
        self.verbose = verbose
        self.address_family = (socket.AF_INET6 if ":" in address[0]
                               else socket.AF_INET)
        super().__init__(address, WhoamiHandler)


def serve_udp(bind, port, node):
    """Answer every datagram with node=... client=... local=... (a thread)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((bind, port))
    local = "%s:%d" % sock.getsockname()[:2]

    def loop():
        while True:
            data, peer = sock.recvfrom(65535)
            sock.sendto(f"node={node} client={peer[0]}:{peer[1]} "
                        f"local={local} len={len(data)}\n".encode(), peer)

    threading.Thread(target=loop, name="whoami-udp", daemon=True).start()
    return sock


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m pyfwd.lab.whoami",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--bind", default="0.0.0.0",
                   help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=80, help="TCP port (80)")
    p.add_argument("--name", default="whoami",
                   help="node name to report (default whoami)")
    p.add_argument("--udp", type=int, metavar="PORT",
                   help="also answer UDP datagrams on PORT")
    p.add_argument("--udp-bind", metavar="ADDR",
                   help="address of the UDP socket (default: --bind)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log each request on stderr")
    args = p.parse_args(argv)
    server = WhoamiServer((args.bind, args.port), args.name, args.verbose)
    if args.udp:
        serve_udp(args.udp_bind or args.bind, args.udp, args.name)
    print(f"whoami {args.name} listening on {args.bind}:{args.port}",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
