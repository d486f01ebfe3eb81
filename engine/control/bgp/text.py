"""How the BGP speaker's status reads: the `bgp` rows of `ctl status` and
the Prometheus families (control.metrics calls render_metrics)."""

# BGP's session states (RFC 4271), numbered for a gauge; "down": BIRD gone
STATES = ("down", "Idle", "Connect", "Active", "OpenSent", "OpenConfirm",
          "Established")


def status_rows(b):
    """[(label, text)] for `ctl status` from BgpSpeaker.status():

        bgp        AS 65001, router id 10.0.0.2, hold 9s, BIRD running,
                   announcing 10.0.0.100/32
        bgp peer   10.0.0.1 AS 65000 Established, 1 prefix exported
    """
    if not isinstance(b, dict):
        return []
    ann = b.get("announced") or []
    rows = [("bgp", f"AS {b.get('local_as')}, router id "
             f"{b.get('router_id')}, hold {b.get('hold_time')}s, BIRD "
             f"{b.get('daemon')}, " + (f"announcing {', '.join(ann)}" if ann
                                       else "announcing nothing"))]
    for s in b.get("sessions") or ():
        n = len(s.get("exported") or ())
        text = f"{s.get('peer')} AS {s.get('as')} {s.get('state')}"
        if s.get("state") == "Established":
            text += f", {n} prefix{'es' if n != 1 else ''} exported"
        elif s.get("info"):
            text += f" ({s['info']})"
        rows.append(("bgp peer", text))
    return rows


def render_metrics(f, b):
    """The families of BgpSpeaker.status() into f (control.metrics's
    _Families): pyfwd_bgp_session_up{peer}, pyfwd_bgp_session_state{peer}
    (STATES index), pyfwd_bgp_prefixes_exported{peer},
    pyfwd_bgp_announced{prefix} and pyfwd_bgp_daemon_restarts_total."""
    if not isinstance(b, dict):
        return
    for s in b.get("sessions") or ():
        labels = {"peer": str(s.get("peer")), "peer_as": str(s.get("as"))}
        state = s.get("state")
        f.add("pyfwd_bgp_session_up", int(state == "Established"), labels,
              "gauge", "1 while the BGP session to the peer is Established.")
        f.add("pyfwd_bgp_session_state",
              STATES.index(state) if state in STATES else 0, labels,
              "gauge", "The BGP session's state: 0 down (BIRD gone), 1 "
              "Idle, 2 Connect, 3 Active, 4 OpenSent, 5 OpenConfirm, 6 "
              "Established.")
        f.add("pyfwd_bgp_prefixes_exported", len(s.get("exported") or ()),
              labels, "gauge", "Prefixes BIRD announces to the peer now.")
    for p in b.get("announced") or ():
        f.add("pyfwd_bgp_announced", 1, {"prefix": str(p)}, "gauge",
              "A VIP prefix pyfwd has BIRD announce (healthy and active).")
    f.add("pyfwd_bgp_daemon_restarts_total", b.get("restarts"),
          kind="counter", help_="Times BIRD died and was started again.")


__all__ = ["status_rows", "render_metrics", "STATES"]
