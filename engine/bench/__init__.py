"""`pyfwd bench`: DR against NAT, side by side with the kernel and
HAProxy, in one run (see README "Benchmarks").

  run      the harness: rows chosen, run in rounds, results written
  results  the results: tables, targets, JSON, Markdown, the figure
  micro    the C core per packet, Maglev builds, flow memory; frames (the
           frames it runs, built with struct)
  pps      packet rates: a generator, the forwarders, an XDP sink
  http     wrk through each balancer to nginx; wrk (a measured run),
           configs (nginx, HAProxy, nftables)
  system   the two cores (LOAD_CPU, LB_CPU), steering, CPU and interface
           counters
"""
