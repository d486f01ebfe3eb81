"""The kernel's view of this host, read through netlink and ioctl: an
interface's index, MAC and RX queues, the route toward an address, an
interface's own IPv4 address.  Everything here asks; nothing changes the
host.  (ARP and neighbour-table look-ups are in arp.py and ndp.py.)
"""

import array
import errno
import fcntl
import ipaddress
import logging
import socket
import struct

from pyroute2 import IPRoute

from pyfwd.errors import ConfigError
from pyfwd.neighbours.arp import mac_to_bytes

log = logging.getLogger("pyfwd")


def interface(ifname):
    """(ifindex, mac bytes, rx queues) of an interface in this netns.

    Raises ConfigError naming the interface when it does not exist.
    """
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            raise ConfigError(f"interface {ifname!r}: no such interface "
                              "in this network namespace")
        link = ipr.get_links(idx[0])[0]
    mac = mac_to_bytes(link.get_attr("IFLA_ADDRESS"))
    return idx[0], mac, rx_queues(ifname)


ETHTOOL_GCHANNELS = 0x3c
SIOCETHTOOL = 0x8946


def rx_queues(ifname):
    """RX queues in use (ethtool channels: rx or combined); 1 when the
    driver does not say.  Netlink's IFLA_NUM_RX_QUEUES counts the queues
    allocated (veth: one per CPU), not those in use."""
    buf = array.array("I", [ETHTOOL_GCHANNELS] + [0] * 8)
    ifr = struct.pack("16sP", ifname.encode(), buf.buffer_info()[0])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return 1
        raise
    # cmd, max_rx, max_tx, max_other, max_combined, rx, tx, other, combined
    return max(buf[5], buf[8], 1)


def route_to(address):
    """(output interface name, next hop address) of the kernel's route to
    address in this network namespace; (None, address) when none."""
    with IPRoute() as ipr:
        try:
            route = ipr.route("get", dst=str(address))[0]
        except Exception:       # pyroute2 raises NetlinkError: no route
            return None, address
        oif = route.get_attr("RTA_OIF")
        gw = route.get_attr("RTA_GATEWAY")
        links = ipr.get_links(oif) if oif else []
    name = links[0].get_attr("IFLA_IFNAME") if links else None
    return name, ipaddress.ip_address(gw) if gw else address


def multicast_socket(ifname):
    """An IPv6 UDP socket (in this network namespace) to hold multicast
    groups with; None, said in the log, where IPv6 is off."""
    try:
        return socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError as exc:
        log.info("%s: no IPv6 socket (%s): IPv6 VIPs' solicited-node "
                 "groups not joined", ifname, exc.strerror or exc)
        return None


def primary_ipv4(ifname):
    """The first IPv4 address of ifname (an IPv4Address) or None."""
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        addrs = ipr.get_addr(index=idx[0], family=socket.AF_INET) \
            if idx else []
    for a in addrs:
        return ipaddress.IPv4Address(a.get_attr("IFA_ADDRESS"))
    return None
