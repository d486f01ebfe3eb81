"""The data plane as Python sees it: the C core and its I/O loops (csrc/,
through cffi), and the tables it schedules new flows from.

    native.py     the cffi boundary (csrc/pyfwd.h): ffi/lib, errors, the
                  header's names (VERDICTS, REASONS, *_COUNTERS), structs
    core.py       Core: the pure core (publish the tables, process a burst
                  of frames, counters, drain the punted frames)
    io.py         the I/O backends Xsk (AF_XDP) and Afp (AF_PACKET), what
                  they steer (VIPs, NAT real servers as Endpoint, SNAT's
                  ports), xdp_cleanup
    tables.py     services -> the core's tables (VIPs, reals, rings)
    scheduler.py  the rings: Maglev, weighted round robin

Only this package touches the cffi ``ffi``/``lib``; the rest of pyfwd hands
it values (model.Service) and reads counters back, by the names
native.py reads from the header.
"""
