"""The balancer's neighbours on the wire: ARP for the IPv4 VIPs, neighbour
discovery for the IPv6 ones, ping to a VIP, and the MACs of the real
servers' next hops.

- responder.py: VipResponder, the base of the three responders;
- arp.py, icmp.py, ndp.py: the frames of each protocol and its responder,
  pure (frame in, reply out), fed the frames the data plane punts;
- ratelimit.py: the per-source and total limits on ARP/NDP answers;
- framesocket.py: FrameSocket, the raw socket the replies and
  announcements leave by;
- kernel.py: the kernel's view (interfaces, addresses, routes, the
  neighbour table) and the neighbours' MACs, asked on the wire if need be;
- check.py: ``pyfwd arp-check``, who answers ARP for a VIP.

Nothing here touches the native core.  The MAC helpers and the Ethernet
and VLAN headers they build on are pyfwd.frames, on the floor below.
"""
