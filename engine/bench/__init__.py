"""`pyfwd bench`: DR against NAT, side by side with the kernel and
HAProxy, in one run (see README "Benchmarks")."""
