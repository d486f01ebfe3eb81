"""The teaching lab: network-namespace topologies on one machine, the
forwarding modes run through them, and the lessons (demo, trace, the ARP
problem, a PACS).  The lab uses the engine; the engine never imports the lab.
"""
