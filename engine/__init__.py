"""pyfwd: a userspace load balancer with a C AF_XDP data plane.

The package lives in engine/ and is imported as ``pyfwd``.  Its rooms, from
the ground up (a room imports only from its own floor or below; the test
tests/unit/test_layout.py holds the code to it):

- ``errors``, ``model`` (Vip, Real, Service: what the user asks for),
  ``frames`` (MAC addresses, ethertypes, Ethernet and VLAN headers),
  ``_netns`` (work inside another network namespace): the ground floor.
- ``dataplane``: the C core and its I/O loops as Python sees them, and the
  tables new flows are scheduled from.  The only room that touches cffi.
- ``neighbours``: the balancer's neighbours on the wire: ARP and neighbour
  discovery for the VIPs, ping to a VIP, the kernel's next hops.
- ``control``: the control plane: the Engine that runs a balancer, the
  configuration file, health checks, HAProxy for L7 VIPs, the HA role, the
  control socket and ``pyfwd ctl``, the metrics.
- ``ops`` (real-server set-up, doctor), ``lab`` (the teaching lab) and
  ``bench`` (``pyfwd bench``): users of the engine, never used by it.
- ``cli``: ``pyfwd``'s command line, on top of everything.

One vocabulary from C to CLI: a **vip** is a virtual service (address, port,
protocol); a **real** is a real server behind it; a **flow** is one
connection, tracked by the core so it stays on its real; each frame gets a
**verdict** (forward, pass to the kernel, punt, drop) and a reason, counted;
a **punt** is a frame the core hands to Python (ARP, ICMP, NDP for a VIP).
"""



def _version() -> str:
    """This installation's version: its distribution's metadata (pip
    wrote it from pyproject.toml, the one place the version is written);
    in a checkout that was never installed, pyproject.toml beside engine/;
    "unknown" when neither is there."""
    from importlib import metadata
    try:
        return metadata.version("pyfwd")
    except metadata.PackageNotFoundError:
        pass
    import os
    import tomllib
    path = os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "pyproject.toml")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)["project"]["version"] + "+checkout"
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def __getattr__(name):
    # __version__ is looked up when asked for (PEP 562): importing pyfwd
    # stays free of importlib.metadata's cost.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
