"""What `pyfwd realserver setup|teardown` changed: one Change per change,
the line the CLI prints and, for --json, the same change as an object.

A Change is the line itself (a str: printed, joined and compared as
before), with .fields, a JSON-ready dict whose "what" says the kind:

    sysctl   {"key": "net.ipv4.conf.all.arp_ignore", "from": 0, "to": 1}
    address  {"action": "added"|"removed", "address": "10.0.0.100/32",
              "dev": "lo", "nodad": bool}
    link     {"dev": "lo", "state": "up"|"down"}
    file     {"action": "wrote"|"removed", "path": "/etc/sysctl.d/..."}
    unit     {"action": "enabled", "unit": NAME, "link": PATH,
              "target": PATH}
    xdp      {"action": "attached"|"detached", "program": NAME,
              "iface": IF, "id": ID or None}
"""


class Change(str):
    """One line of what changed, with .fields (see the module)."""

    fields: dict

    def __new__(cls, text: str, **fields):
        self = super().__new__(cls, text)
        self.fields = fields
        return self

    def to_dict(self) -> dict:
        """The change as JSON: its fields and "text", the line."""
        return {**self.fields, "text": str(self)}


def sysctl(key: str, old, new) -> Change:
    return Change(f"{key}: {old} -> {new}", what="sysctl", key=key,
                  **{"from": old, "to": new})


def address(action: str, addr, dev: str, nodad: bool = False, *,
            say_nodad: bool = True) -> Change:
    """addr: "ADDR/PREFIXLEN" (or an ip_interface).  say_nodad: the line
    ends in " (nodad)" when nodad (the TUN device's line never did)."""
    where = "to" if action == "added" else "from"
    return Change(f"{action} {addr} {where} {dev}"
                  + (" (nodad)" if nodad and say_nodad else ""),
                  what="address",
                  action=action, address=str(addr), dev=dev, nodad=nodad)


def link(dev: str, state: str) -> Change:
    return Change(f"set {dev} {state}", what="link", dev=dev, state=state)


def file(action: str, path: str) -> Change:
    return Change(f"{action} {path}", what="file", action=action, path=path)


def unit_enabled(unit: str, link_path: str, target: str) -> Change:
    return Change(f"enabled {unit}: {link_path} -> {target}", what="unit",
                  action="enabled", unit=unit, link=link_path,
                  target=target)


def xdp(action: str, program: str, iface: str, prog_id=None) -> Change:
    text = f"{action} XDP {program}" + \
        (f" (id {prog_id})" if prog_id is not None else "") + \
        (" to " if action == "attached" else " from ") + iface
    return Change(text, what="xdp", action=action, program=program,
                  iface=iface, id=prog_id)


def to_json(changes: list) -> list:
    """[Change, ...] -> [{"what": ..., "text": ...}, ...]."""
    return [c.to_dict() for c in changes]
