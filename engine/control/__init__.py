"""The control plane: the Engine that owns a running balancer, its
configuration file, health checks, HAProxy for L7 VIPs, the HA role, the
control socket (and ``pyfwd ctl``'s client side) and the metrics.
"""
