"""Health checks of real servers, per VIP, as the appliance does them.

    spec.py        HealthSpec: a VIP's ``health`` table, validated
    probes.py      check(): tcp, http, https and command probes
    dicom.py       the DICOM C-ECHO probe (PDUs built and parsed here)
    connection.py  one probe's TCP conversation within its deadline
    vipprobe.py    via_vip: a DR real's SYN-ACK at the VIP, through its MAC
    monitor.py     HealthMonitor: probes every interval, rise/fall, reports
                   up/down through on_change

Three tiers, as elsewhere in pyfwd: a failing peer is a value
(``check`` returns ``(False, reason)``), bad input (a config table, an
address) raises ``ConfigError``, and an unexpected error inside a probe is
logged by the monitor and counted as a failed probe.
"""
