"""pyfwd: a userspace load balancer with a C AF_XDP data plane.

The package lives in engine/ and is imported as ``pyfwd``.  One module, one
concern: see ../shared/DESIGN.md and the README for the map.
"""

__version__ = "0.1.0"
