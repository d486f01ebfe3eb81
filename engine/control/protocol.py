"""The control protocol: its commands and how a request line is read.

One JSON object per line: {"cmd": NAME, FIELD: VALUE, ...}.  `COMMANDS`
lists the commands, their fields (in the CLI's argument order) and what
they do; the control socket (control.server) serves them, `pyfwd ctl`
(cli.ctl) is made from them.

    parse_request(b'{"cmd": "drain", "vip": "web", "real": "10.0.0.11"}')
    # -> ("drain", ["web", "10.0.0.11"]); BadRequest naming the problem
"""

import json
from typing import NamedTuple

from ..errors import PyfwdError
from .ha import ROLES


REQUIRED = object()     # Arg.default of a field a request must give
FLOWS_LIMIT_DEFAULT = 100   # the rows `ctl flows` lists unless told


class Arg(NamedTuple):
    """A request field: its name, its JSON type (str, int or dict), what
    it means and, when only some values are valid, those (checked here);
    default: the value of a field left out (or null), REQUIRED when it
    must be given (the CLI makes an optional field an --option)."""

    name: str
    type: type
    help: str
    choices: tuple = ()
    default: object = REQUIRED


class Command(NamedTuple):
    """A control command: its fields (in CLI argument order), a one-line
    description, the engine method it calls (None: served here; `a.b`:
    the method b of the engine's part a) and
    whether it waits for the other engine calls to finish (serialized) or
    runs at once, beside them (the method is safe for that: it reads, or
    takes the engine's own lock briefly)."""

    args: tuple
    help: str
    method: "str | None"
    serialized: bool = True


_VIP = Arg("vip", str, "the VIP: its name (pacs-web) or ADDR:PORT/PROTO")
_REAL = Arg("real", str, "the real server: ADDR or ADDR:PORT")

COMMANDS = {
    "help": Command((), "list the commands and their fields", None),
    # Not serialized: keepalived's engine check runs it every second and
    # must not take a reload (up to 5 s, waiting for ARP) for a dead
    # engine.
    "status": Command((), "the engine: interface, pid, uptime, VIP and "
                      "real server counts, the XDP/AF_XDP modes", "status",
                      serialized=False),
    "show": Command((), "the VIPs and their real servers: weight, state, "
                    "health, whether scheduled and why not, counters "
                    "(since the last `zero`)", "views.show"),
    "stats": Command((), "every counter: frames per verdict and reason, "
                     "queues, ARP, per VIP and real server (since the last "
                     "`zero`)", "views.stats"),
    "rate": Command((), "new flows, packets and bytes per second toward "
                    "each VIP and real server (as ipvsadm -L --rate): "
                    "sampled every 2 s, averaged as IPVS does (EWMA, "
                    "each sample weighing 1/4)", "views.rate"),
    "zero": Command((Arg("vip", str, "the VIP whose counters to zero "
                         "(its name or ADDR:PORT/PROTO); every counter "
                         "when left out", default=None),),
                    "zero the counters that show and stats print (as "
                    "ipvsadm -Z): a baseline subtracted from ctl's output; "
                    "the metrics' counters never go down", "views.zero"),
    "flows": Command((Arg("vip", str, "only the flows to this VIP (its "
                          "name or ADDR:PORT/PROTO)", default=None),
                      Arg("limit", int, "list at most this many (0: all)",
                          default=FLOWS_LIMIT_DEFAULT)),
                     "the flows alive (as ipvsadm -L -c): protocol, "
                     "state, expiry, client, VIP, real server, SNAT port",
                     "views.flows"),
    "add-vip": Command((Arg("vip", dict, "the VIP: one [[vip]] table of the "
                            "config file as a JSON object, \"real\" "
                            "optional"),),
                       "add a VIP", "add_vip"),
    "del-vip": Command((_VIP,), "remove a VIP (its flows end)", "del_vip"),
    "add-real": Command((_VIP, Arg("real", str, "the real server: "
                                   "ADDR[:PORT][@WEIGHT]")),
                        "add a real server to a VIP", "add_real"),
    "del-real": Command((_VIP, _REAL), "remove a real server from a VIP "
                        "(its flows move to the others)", "del_real"),
    "weight": Command((_VIP, _REAL, Arg("weight", int, "the new weight "
                                        "(0: no new flows)")),
                      "set a real server's weight", "set_weight"),
    "drain": Command((_VIP, _REAL), "no new flows to a real server; "
                     "established ones stay", "drain"),
    "halt": Command((_VIP, _REAL), "no flows at all to a real server, "
                    "established ones move", "halt"),
    "online": Command((_VIP, _REAL), "put a drained or halted real server "
                      "back in service", "online"),
    "reload": Command((), "re-read the config file and apply the "
                      "differences (the changes made by ctl are kept)",
                      "reload"),
    "changes": Command((), "the changes made by ctl that are kept over the "
                       "config file (state file), and their conflicts with "
                       "it", "operator_changes"),
    "forget": Command((_VIP, Arg("real", str, "the real server (ADDR or "
                                 "ADDR:PORT), or all: the VIP's every "
                                 "change")),
                      "drop the changes made by ctl to a real server (or "
                      "VIP): the config file's word applies again",
                      "forget"),
    # Not serialized: a failover must not wait behind a reload or an
    # add-vip (set_role takes the engine's lock for a moment only).
    "ha": Command((Arg("role", str, "active: answer ARP for the VIPs and "
                       "announce them (gratuitous ARP); standby: stop "
                       "answering", ROLES),),
                  "set this node's high-availability role (keepalived's "
                  "notify scripts call it)", "set_role", serialized=False),
    # Not serialized, as status: keepalived's engine check.
    "ha-renew": Command((), "check the engine and renew the active role's "
                        "lease (keepalived's engine check runs it every "
                        "second; an active engine whose lease runs out "
                        "stands down)", "renew_lease", serialized=False),
}

_TYPE_NAMES = {str: "string", int: "integer", dict: "object"}


def help_result():
    """What {"cmd": "help"} returns: [{"cmd", "args": {name: type},
    "help"}] (an optional field's type: `integer, optional`)."""
    return [{"cmd": name,
             "args": {a.name: _TYPE_NAMES[a.type] +
                      ("" if a.default is REQUIRED else ", optional")
                      for a in c.args},
             "help": c.help} for name, c in COMMANDS.items()]


class BadRequest(PyfwdError):
    """A request that does not follow the protocol (answered, not raised
    to the caller of the server)."""


def parse_request(line):
    """Decode one request line (bytes, no newline) into (cmd, [args]).

    The args are in the order of COMMANDS[cmd].args.  Raises BadRequest
    naming the problem: not UTF-8, not JSON, not an object, no or unknown
    command, a missing, unknown or ill-typed field.
    """
    try:
        req = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("request is not UTF-8 text") from None
    except RecursionError:
        raise BadRequest("request is not JSON: nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"request is not JSON: {exc}") from None
    if not isinstance(req, dict):
        raise BadRequest(f"request must be a JSON object like "
                         f"{{\"cmd\": \"show\"}}, not {_json_type(req)}")
    cmd = req.get("cmd")
    if cmd is None:
        raise BadRequest("request has no \"cmd\" field; commands: "
                         + ", ".join(COMMANDS))
    if not isinstance(cmd, str):
        raise BadRequest(f"field 'cmd' must be a string, not "
                         f"{_json_type(cmd)}")
    command = COMMANDS.get(cmd)
    if command is None:
        raise BadRequest(f"unknown command {short(cmd)}; commands: "
                         + ", ".join(COMMANDS))
    names = [a.name for a in command.args]
    expects = f" (expects: {', '.join(names)})" if names else \
        " (expects no fields)"
    extra = [k for k in req if k != "cmd" and k not in names]
    if extra:
        raise BadRequest(f"{cmd}: unknown field {short(extra[0])}{expects}")
    args = []
    for a in command.args:
        if a.default is not REQUIRED and req.get(a.name) is None:
            args.append(a.default)
            continue
        if a.name not in req:
            raise BadRequest(f"{cmd}: missing field '{a.name}'{expects}")
        value = req[a.name]
        # bool is an int in Python, not in JSON
        if not isinstance(value, a.type) or isinstance(value, bool):
            raise BadRequest(f"{cmd}: field '{a.name}' must be "
                             f"{_article(_TYPE_NAMES[a.type])}, not "
                             f"{_json_type(value)}")
        if a.choices and value not in a.choices:
            raise BadRequest(f"{cmd}: field '{a.name}' must be "
                             f"{' or '.join(map(repr, a.choices))}, not "
                             f"{short(value)}")
        args.append(value)
    return cmd, args


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _article(word):
    return ("an " if word[0] in "aeiou" else "a ") + word


def short(value, limit=60):
    """repr(value), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


__all__ = ["Arg", "Command", "REQUIRED", "FLOWS_LIMIT_DEFAULT", "COMMANDS",
           "help_result", "BadRequest", "parse_request", "short"]
