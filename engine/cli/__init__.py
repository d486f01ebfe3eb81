"""pyfwd's command line (click).  Thin: every command calls a module API.

A PyfwdError becomes one line on stderr and exit status 1; a traceback is a
bug.

    main.py      the `pyfwd` program: the root group, main()
    common.py    what every group shares (CONTEXT, Group, need_root)
    balancer.py  start, cleanup, check-config
    ctl.py       ctl: made from control/protocol.py's COMMANDS
    ha.py        ha keepalived-conf
    ops.py       realserver, arp-check, doctor
    lab.py       lab (up, down, show, list, exec, demo, trace, arp-problem)
    bench.py     bench
"""
