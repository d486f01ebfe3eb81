"""The data plane as Python sees it: the native core and its I/O loops
(through cffi), and the tables it schedules new flows from.

Only this package touches the cffi ``ffi``/``lib`` (``native``); the rest of
pyfwd hands it values (model.Service) and reads counters back.
"""
