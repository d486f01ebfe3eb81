"""The balancer's neighbours on the wire: ARP for the IPv4 VIPs, neighbour
discovery for the IPv6 ones, ping to a VIP, and the kernel's view of the
real servers' next hops.

The responders are pure (frame in, reply out) and are fed the frames the
data plane punts; nothing here touches the native core.
"""
