"""The teaching lab: network-namespace topologies on one machine, the
forwarding modes run through them, and the lessons (demo, trace, the ARP
problem, a PACS).  The lab uses the engine; the engine never imports the lab.

Topologies (`pyfwd lab up|show|exec|down`):
  plan        the address plan: topologies as data, make_plan, Marker (pure)
  namespaces  the namespaces in the kernel: created and marked, entered,
              found again, removed
  programs    programs, sockets and calls inside them (Namespaces), PYFWD
  topology    Lab: builds a plan and runs things in it
Running the modes in a lab:
  modes       each mode's topology, real-server set-up and balancer
  whoami      the real servers' HTTP server
  capture     capture at the switch ports, pcap files, parse_tcp4
Lessons:
  demo        `pyfwd lab demo`
  trace       `pyfwd lab trace`; segments (frames to journeys), diagram
              (text and SVG)
  arpproblem  `pyfwd lab arp-problem`; arpmeasure (what it measures)
  pacs        the PACS workload; dicom (dcmtk, WADO-RS answers), orthanc
              (the archives)
  words       plural(), for the lessons' sentences
"""
