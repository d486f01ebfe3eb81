"""L7 VIPs: pyfwd drives a real HAProxy (2.0 or later, tested with 2.6).

Pure values, testable without HAProxy:
  options.py   L7Options: the L7 keys of a [[vip]] table, parsed and checked
  render.py    HAProxy's configuration text (L7Vip, render) and the names in
               it (l7_name, l7_server), haproxy_weights
Processes and sockets:
  runtime.py   RuntimeApi: HAProxy's runtime API (server state and weight,
               show servers state, show stat, show proc)
  haproxy.py   HAProxy: one master-worker HAProxy tree as pyfwd's child
               (start, seamless reload, watchdog, stop)
  sync.py      L7Sync: the engine's L7 VIPs kept in HAProxy (addresses on
               the interface, configuration, per-server state and weight,
               HAProxy's rows for `show`)
"""

from pyfwd.control.l7.haproxy import MIN_VERSION, HAProxy
from pyfwd.control.l7.options import L7_MODES, L7Options
from pyfwd.control.l7.render import (BALANCE, DEFAULT_TIMEOUTS,
                                     HAPROXY_WEIGHT_MAX, L7Vip,
                                     haproxy_weights, l7_name, l7_server,
                                     l7_vips, render, sanitize, server_name)
from pyfwd.control.l7.runtime import OP_STATES, STATES, RuntimeApi
from pyfwd.control.l7.sync import L7Sync

__all__ = ["MIN_VERSION", "HAProxy", "L7_MODES", "L7Options", "BALANCE",
           "DEFAULT_TIMEOUTS", "HAPROXY_WEIGHT_MAX", "L7Vip",
           "haproxy_weights", "l7_name", "l7_server", "l7_vips", "render",
           "sanitize", "server_name", "OP_STATES", "STATES", "RuntimeApi",
           "L7Sync"]
