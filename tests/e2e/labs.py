"""Labs whose real servers answer: whoami on each real server (TCP and UDP
9000), the NAT way (port 8080, behind VIP:80) or the DR way (`pyfwd
realserver setup` for the VIP, port 80, UDP bound to the VIP).  Shared by
the e2e tests that forward traffic."""

import secrets
import subprocess
import time

from pyfwd.control import server as control
from pyfwd.control.engine import Engine
from pyfwd.lab import whoami
from pyfwd.lab.programs import PYFWD
from pyfwd.lab.topology import Lab

from .procs import wait_line

UDP_PORT = 9000


def build(prefix, topology, reals=3, dr_vip=None, queues=1):
    """A lab named prefix + 6 hex digits (its balancer's veths with
    `queues` queues), up, its real servers answering (see the module);
    removed again if that fails."""
    lab = Lab(prefix + secrets.token_hex(3), topology=topology,
              reals=reals, queues=queues).up()
    try:
        for role in lab.reals:
            if dr_vip:
                r = lab.run(role, PYFWD + ["realserver", "setup", "--vip",
                                           dr_vip], capture_output=True,
                            text=True)
                assert r.returncode == 0, r.stderr
            p = lab.popen(role, whoami.command(
                80 if dr_vip else 8080, role, udp=UDP_PORT, udp_bind=dr_vip),
                stdout=subprocess.PIPE, text=True)
            wait_line(p, "listening")
    except BaseException:
        lab.down()
        raise
    return lab


def serve_engine(lab, services, backend, sock, **kw):
    """For fixtures: an in-process Engine for services on lb's eth0 (poll
    mode, 65536 flow slots, `backend`, kw: Engine's options) with a
    control socket at `sock` (eng.sock); yields it, then stops both after
    the last FIN handshakes went through the engine."""
    eng = Engine("eth0", services, busy_poll=0, flows=1 << 16,
                 backend=backend, **kw)
    lab.call("lb", eng.start)
    assert eng.info.backend == backend
    eng.sock = str(sock)
    srv = control.ControlServer(eng, eng.sock).start()
    try:
        yield eng
    finally:
        time.sleep(0.5)
        srv.stop()
        eng.stop()
