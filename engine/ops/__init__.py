"""Operators' helpers that are not the balancer: set-up of a DR real
server (realserver.py; what a reboot needs, realserver_boot.py), and
``pyfwd doctor`` (doctor.py; its checks in ifchecks.py, pure; what they
read, ifread.py; their results, findings.py).
"""
