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
  addresses.py InterfaceAddresses: the L7 VIP addresses on the interface
               (shared, the operator's left alone, ours removed when
               unused)
  sync.py      L7Sync: the engine's L7 VIPs kept in HAProxy (addresses on
               the interface, configuration, per-server state and weight,
               HAProxy's rows for `show`)
  check.py     check_haproxy: `check-config`'s `haproxy -c` of the L7 VIPs
"""
