"""What a DR real server needs to come back after a reboot, written under a
root directory (``/`` on the real server itself, a temporary one in tests).

Two things, written by ``pyfwd realserver setup --persist``:

- ``etc/sysctl.d/99-pyfwd-realserver.conf``: arp_ignore and arp_announce
  for ``all`` and ``default``.  At boot every interface starts from
  ``default``, so the per-interface values setup() writes (to beat a higher
  value left by someone) are not needed there; a sysctl file that sets a
  higher one is, and ``persisted_problems`` finds it.  Read at boot by
  systemd-sysctl (``sysctl -p FILE`` by hand).  IPv4 only: an IPv6 VIP
  needs no setting (realserver.py says why).
- one oneshot unit per VIP, ``etc/systemd/system/pyfwd-realserver-VIP
  .service``, enabled (its symlink in multi-user.target.wants, as
  ``systemctl enable`` makes it), that runs ``pyfwd realserver setup --vip
  VIP --dev DEV`` at boot, before network-pre.target: the same code as by
  hand, whatever manages the network (networkd, NetworkManager, ifupdown),
  IPv6's nodad included.  The unit names pyfwd's executable by its
  absolute path: moving pyfwd breaks it, and ``status`` says so.

``persisted_problems`` compares what is written with what a reboot needs
and with the running state; the sysctl files of the usual directories are
read in systemd-sysctl's order, so a later file that undoes ours is found.
"""

import ipaddress
import os
import re
import shlex

from . import realserver_changes as change
from ..errors import ConfigError, PyfwdError

SYSCTL_FILE = "etc/sysctl.d/99-pyfwd-realserver.conf"
UNIT_DIR = "etc/systemd/system"
WANTS_DIR = "etc/systemd/system/multi-user.target.wants"
UNIT_PREFIX = "pyfwd-realserver-"
# systemd-sysctl's directories, the first of a file name wins; procps reads
# /etc/sysctl.conf last (Debian links it as 99-sysctl.conf)
_SYSCTL_DIRS = ("etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d",
                "usr/lib/sysctl.d", "lib/sysctl.d")
# The values that keep a VIP on lo silent.  arp_ignore: 1 and 2 (2 is
# stricter); 8 never replies at all; 3 would answer for a global VIP, 0
# always does.  arp_announce: 2, never the VIP as the sender of a request.
ARP_GOOD = {"arp_ignore": (1, 2, 8), "arp_announce": (2,)}
_ARP_KEYS = tuple(ARP_GOOD)

__all__ = ["ARP_GOOD", "SYSCTL_FILE", "unit_name", "unit_text",
           "sysctl_text", "persist", "unpersist", "persisted_problems",
           "effective_sysctl"]


def _path(root, rel):
    return os.path.join(root, rel)


def unit_name(vip) -> str:
    """The unit of one VIP: pyfwd-realserver-10.0.0.100.service; an IPv6
    VIP's colons become '_' (pyfwd-realserver-fd00__100.service): systemd
    takes ':' in a unit name, but ``systemd-analyze verify`` does not take
    it in a file's path."""
    text = str(ipaddress.ip_address(str(vip))).replace(":", "_")
    return f"{UNIT_PREFIX}{text}.service"


def unit_text(vip, dev, command) -> str:
    """The oneshot unit that puts ``vip`` back on ``dev`` at boot;
    ``command``: how to run pyfwd (argv, an absolute path first)."""
    cmd = shlex.join([*command, "realserver", "setup", "--vip", str(vip),
                      "--dev", dev])
    return f"""\
# Written by `pyfwd realserver setup --persist`; removed by
# `pyfwd realserver teardown --persist`.  `pyfwd realserver status` checks it.
[Unit]
Description=pyfwd DR real server: VIP {vip} on {dev}, not answering ARP for it
DefaultDependencies=no
After=systemd-sysctl.service local-fs.target
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={cmd}

[Install]
WantedBy=multi-user.target
"""


def sysctl_text(arp) -> str:
    """The sysctl.d file: ``arp`` {"arp_ignore": n, "arp_announce": n} on
    all and default."""
    lines = ["# Written by `pyfwd realserver setup --persist`: a DR real "
             "server answers no ARP",
             "# for its VIPs on lo (arp_ignore) and never puts a VIP in its "
             "own ARP requests",
             "# (arp_announce).  The kernel applies max(all, interface)."]
    for name in ("all", "default"):
        for key in _ARP_KEYS:
            lines.append(f"net.ipv4.conf.{name}.{key} = {arp[key]}")
    return "\n".join(lines) + "\n"


def _write(path, text, changes):
    """Write text to path atomically (temp file, rename); a line in changes
    unless it was already so."""
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    changes.append(change.file("wrote", path))


def persist(vip, dev="lo", *, root="/", command, arp=None) -> list:
    """Write what a reboot needs for ``vip`` on ``dev`` under ``root``: the
    unit (enabled) and, for an IPv4 VIP, the sysctl file with ``arp``
    ({"arp_ignore", "arp_announce"}) on all and default.
    ``command``: how to run pyfwd (argv: ["/usr/bin/pyfwd"], or [python,
    "-m", "pyfwd.cli"]; an absolute path first).  Idempotent; returns the
    lines of what it wrote ([] when everything was there).  Raises
    PyfwdError when a file cannot be written."""
    addr = ipaddress.ip_address(str(vip))
    if not command or not os.path.isabs(command[0]):
        raise ConfigError(f"pyfwd command {command!r}: expected an absolute "
                          "path first (the unit runs it at boot)")
    changes = []
    try:
        if addr.version == 4:
            _write(_path(root, SYSCTL_FILE), sysctl_text(arp),
                   changes)
        unit = _path(root, f"{UNIT_DIR}/{unit_name(addr)}")
        _write(unit, unit_text(addr, dev, command), changes)
        link = _path(root, f"{WANTS_DIR}/{unit_name(addr)}")
        target = f"/{UNIT_DIR}/{unit_name(addr)}"
        if not os.path.islink(link) or os.readlink(link) != target:
            os.makedirs(os.path.dirname(link), exist_ok=True)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(target, link)
            changes.append(change.unit_enabled(unit_name(addr), link,
                                               target))
    except OSError as exc:
        raise PyfwdError(f"cannot write {exc.filename}: "
                         f"{exc.strerror or exc}") from exc
    return changes


def _units(root):
    try:
        return sorted(n for n in os.listdir(_path(root, UNIT_DIR))
                      if n.startswith(UNIT_PREFIX) and n.endswith(".service"))
    except FileNotFoundError:
        return []


def unpersist(vip, *, root="/") -> list:
    """Remove ``vip``'s unit and its symlink and, when no other VIP's unit
    remains, the sysctl file.  Returns the lines of what it removed."""
    name = unit_name(vip)
    changes = []
    paths = [_path(root, f"{WANTS_DIR}/{name}"),
             _path(root, f"{UNIT_DIR}/{name}")]
    try:
        for path in paths:
            if os.path.lexists(path):
                os.unlink(path)
                changes.append(change.file("removed", path))
        sysctl = _path(root, SYSCTL_FILE)
        if not _units(root) and os.path.exists(sysctl):
            os.unlink(sysctl)
            changes.append(change.file("removed", sysctl))
    except OSError as exc:
        raise PyfwdError(f"cannot remove {exc.filename}: "
                         f"{exc.strerror or exc}") from exc
    return changes


_SYSCTL_LINE = re.compile(r"^\s*(-?)\s*([\w./-]+)\s*=\s*(.*?)\s*$")


def _sysctl_files(root):
    """The sysctl files under root in the order systemd-sysctl applies them
    (by file name; /etc's wins over the same name elsewhere), then
    /etc/sysctl.conf."""
    chosen = {}
    for d in _SYSCTL_DIRS:
        try:
            names = os.listdir(_path(root, d))
        except FileNotFoundError:
            continue
        for n in names:
            if n.endswith(".conf"):
                chosen.setdefault(n, _path(root, f"{d}/{n}"))
    files = [chosen[n] for n in sorted(chosen)]
    conf = _path(root, "etc/sysctl.conf")
    if os.path.exists(conf) and os.path.realpath(conf) not in \
            {os.path.realpath(f) for f in files}:
        files.append(conf)
    return files


def effective_sysctl(root="/") -> dict:
    """{key: (value, file)}: the value of every net.ipv4.conf.*.arp_*
    key after all the sysctl files under root, and the file that set it."""
    out = {}
    for path in _sysctl_files(root):
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            m = _SYSCTL_LINE.match(line)
            if not m or line.lstrip().startswith(("#", ";")):
                continue
            key = m.group(2).replace("/", ".")
            if key.startswith("net.ipv4.conf.") and \
                    key.rsplit(".", 1)[-1] in _ARP_KEYS:
                out[key] = (m.group(3), path)
    return out


def _unit_exec(path):
    """The argv of the unit's ExecStart, or None."""
    with open(path) as f:
        for line in f:
            if line.startswith("ExecStart="):
                return shlex.split(line[len("ExecStart="):])
    return None


def persisted_problems(vip, dev, *, root="/") -> list:
    """What a reboot would lack for ``vip`` on ``dev``, as text, [] when
    nothing: the unit missing, not enabled, for another device or with an
    executable that is not there (under root); for an IPv4 VIP, the sysctl
    files leaving all's arp_ignore or arp_announce at a value that answers
    ARP for the VIP (ARP_GOOD)."""
    addr = ipaddress.ip_address(str(vip))
    name = unit_name(addr)
    problems = []
    unit = _path(root, f"{UNIT_DIR}/{name}")
    if not os.path.exists(unit):
        problems.append(f"no {unit}: the VIP is not put back at boot (`pyfwd "
                        f"realserver setup --vip {addr} --persist`)")
    else:
        argv = _unit_exec(unit) or []
        given = dict(zip(argv, argv[1:]))
        if given.get("--vip") != str(addr) or given.get("--dev") != dev:
            problems.append(f"{unit} puts {given.get('--vip')} on "
                            f"{given.get('--dev')}, not {addr} on {dev}")
        exe = argv[0] if argv else ""
        if not os.access(_path(root, exe.lstrip("/")), os.X_OK):
            problems.append(f"{unit} runs {exe or 'nothing'}, which is not "
                            "an executable there")
        link = _path(root, f"{WANTS_DIR}/{name}")
        if not os.path.islink(link) or \
                os.readlink(link) not in (f"/{UNIT_DIR}/{name}", f"../{name}"):
            problems.append(f"{name} is not enabled (no link to it in "
                            f"{_path(root, WANTS_DIR)})")
    if addr.version == 4:
        problems += _sysctl_problems(addr, effective_sysctl(root), ARP_GOOD)
    return problems


def _sysctl_problems(addr, found, good):
    """What the sysctl files (effective_sysctl) leave wrong at boot: all's
    value missing or bad, or another interface's (default included) above
    all's and bad (the kernel applies the max)."""
    problems = []
    for key, ok in good.items():
        full = f"net.ipv4.conf.all.{key}"
        value, where = found.get(full, (None, None))
        base = _int(value)
        if value is None:
            problems.append(f"no sysctl file sets {full} (it boots at 0: "
                            f"the host answers ARP for {addr})")
        elif base not in ok:
            problems.append(f"{where} leaves {full} = {value} at boot (want "
                            f"one of {', '.join(map(str, ok))})")
        for other, (v, where) in sorted(found.items()):
            if other == full or not other.endswith("." + key):
                continue
            n = _int(v)
            if n is None or (n not in ok and n > (base or 0)):
                problems.append(f"{where} sets {other} = {v}: above all's, "
                                "the kernel applies it (want one of "
                                f"{', '.join(map(str, ok))})")
    return problems


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
