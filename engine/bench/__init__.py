"""`pyfwd bench`: DR against NAT, side by side with the kernel and
HAProxy, in one run (see docs/bench.md).

  run      the harness: rows chosen, run in rounds, results written
  rows     the packet-rate and HTTP rows, one line each, interleaved
  results  the results: tables, targets, JSON, Markdown, the figure;
           breakdown (where each row's time went), text (figures as text)
  micro    the C core per packet, Maglev builds, flow memory; frames (the
           frames it runs, built with struct)
  pps      packet rates: a generator, the forwarders, an XDP sink; ladder
           (the offered loads every row climbs down)
  http     wrk through each balancer to nginx; balancers (how each is
           started), wrk (a measured run), configs (nginx, HAProxy,
           nftables)
  observe  per window: CPU per thread, AF_XDP sockets' XDP_STATISTICS,
           busy polling
  system   the two cores (LOAD_CPU, LB_CPU), steering, CPU and interface
           counters
"""
