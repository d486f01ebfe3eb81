"""The web dashboard on the metrics listener (`pyfwd start --metrics`).

    app.py     Dashboard: the page at /, its assets at /static/, the JSON
               API (/api/state, /api/events, POST /api/action)
    token.py   the actions' token: its file checked, the header compared
    static/    index.html, app.js, style.css: plain files, served by pyfwd
               (no framework, no CDN: hospital networks have no internet)

The state comes from Engine.stats() and the engine's event log
(control.events); actions (drain, halt, online, weight) go through the
control server's serialized path, as `pyfwd ctl` does.
"""

from .app import Dashboard
from .token import load_token

__all__ = ["Dashboard", "load_token"]
