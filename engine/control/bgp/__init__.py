"""BGP: the engine announces its VIPs through BIRD 2, its child process
(options: the [bgp] table; render: bird.conf; bird: the process;
birdsock: its control socket; speaker: what to announce, and when).

The speaker is imported when first asked for: `pyfwd ctl` formats BGP's
lines through bgp.text and must not pay for the speaker's imports (the
data plane, pyroute2, numpy) on every call; keepalived runs `pyfwd ctl
ha-renew` every second."""

from .options import BgpOptions, BgpPeer

__all__ = ["BgpOptions", "BgpPeer", "BgpSpeaker", "announceable"]


def __getattr__(name):
    if name in ("BgpSpeaker", "announceable"):
        from . import speaker
        return getattr(speaker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
