"""BGP: the engine announces its VIPs through BIRD 2, its child process
(options: the [bgp] table; render: bird.conf; bird: the process;
birdsock: its control socket; speaker: what to announce, and when)."""

from .options import BgpOptions, BgpPeer
from .speaker import BgpSpeaker, announceable

__all__ = ["BgpOptions", "BgpPeer", "BgpSpeaker", "announceable"]
