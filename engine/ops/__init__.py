"""Operators' helpers that are not the balancer: set-up of a DR real
server, and ``pyfwd doctor``.
"""
