"""The configuration file: one TOML file of VIPs and their real servers.

Validated up front (`pyfwd check-config FILE`): every error names the key,
the value and what was expected, before anything on the machine is
touched.

    [engine]
    iface = "eth0"
    inside_iface = "eth1"                   # two-arm NAT only
    control_socket = "/run/pyfwd/pyfwd.sock"
    metrics = "127.0.0.1:10104"             # optional
    dashboard_token = "/etc/pyfwd/dashboard.token"  # the dashboard's actions
                                            # (at metrics' /); 0600, root's
    snat_address = "10.0.0.2"               # SNAT; default: iface's address
    snat_ports = "61000-65535"
    role = "active"                         # or "standby" (HA, at start)
    neighbour_stale = 60                    # s a real's MAC outlives no ARP
    state_file = "/var/lib/pyfwd/pyfwd.state"  # the changes made by ctl;
                                            # default: this file + .state
    arp_rate = 2000                         # ARP/NDP answers per second
    arp_burst = 500                         # ... at once
    arp_source_rate = 20                    # ... to one asking MAC
    arp_source_burst = 40                   # (neighbours.ratelimit)
    new_flows_per_second = 0                # per queue, 0: no cap; beyond:
                                            # DR+maglev untracked, else drop
    poll = "adaptive"                       # busy polling: under load only,
                                            # or "busy": always
    frames = 0                              # AF_XDP UMEM frames per queue
    rx_ring = 2048                          # ring sizes: powers of two
    tx_ring = 2048                          # (dataplane.io.XskRings; frames
    fill_ring = 4096                        # 0: twice the fill ring per
    comp_ring = 2048                        # interface)
    fastpath = "off"                        # "xdp": established flows sent
                                            # by XDP (docs/fastpath.md)
    tun_sources = ["10.0.0.2"]              # TUN's outer sources, one per
                                            # family; default: iface's

    [engine.timeouts]                       # optional: idle seconds of a flow
    tcp_syn = 30                            # half-open: handshake not done
    tcp_established = 900
    tcp_fin = 10                            # after a FIN or RST
    udp = 300

    [bgp]                                   # optional (bgp.BgpOptions):
    local_as = 65001                        # announce the VIPs by BGP
    router_id = "10.0.0.2"                  # default: iface's address
    hold_time = 9                           # s
    [[bgp.peer]]
    address = "10.0.0.1"
    as = 65000

    [ha]                                    # optional (ha.HaOptions)
    lease = 2.5                             # s; 0: no lease
    gateway = "192.168.50.1/24"             # NAT: the reals' gateway

    [[vip]]
    name = "pacs-web"
    address = "10.0.0.100"
    port = 80
    protocol = "tcp"
    mode = "dr"                             # dr | nat | snat | tun | l7
    scheduler = "wlc"                       # rr | wrr | lc | wlc | sh | maglev
    persistence = 0                         # seconds of source affinity
    health = { type = "http", path = "/", expect = 200, interval = 1.0,
               timeout = 1.0, rise = 2, fall = 2 }
    fallback = "10.0.0.50:80"               # optional
    on_down = "quiesce"                     # failed check: quiesce | reset

    [[vip.real]]
    address = "10.0.0.11"
    port = 80                               # NAT/SNAT: port translation
    weight = 100
"""

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field

from .bgp.options import BgpOptions
from .ha import HaOptions
from .health.spec import HealthSpec
from .health.vipprobe import check_via_vip
from .l7.conflicts import check_shared_reals
from .l7.options import SOURCE_EXPIRE, L7Options
from .nexthops import NEIGHBOUR_STALE, check_stale
from .server import DEFAULT_PATH
from .tunnel import check_sources
from ..dataplane.core import NEW_FLOWS_MAX, TIMEOUT_MAX, TIMEOUTS
from ..dataplane.io import POLL_DEFAULT, POLL_MODES, XskRings
from ..dataplane.tables import check_limits
from ..errors import ConfigError
from ..model import (MODES, NAME_RULE, ON_DOWN, SCHEDULERS, SNAT_PORTS,
                     Real, Service, Vip, check_name)
from ..dataplane.fastpath import MODES as fastpath_modes
from ..neighbours.ratelimit import NeighbourLimits

ENGINE_KEYS = {"iface": str, "inside_iface": str, "snat_address": str,
               "snat_ports": str, "control_socket": str, "metrics": str,
               "dashboard_token": str,
               "role": str, "neighbour_stale": (int, float),
               "state_file": str, "timeouts": dict,
               "new_flows_per_second": int, "poll": str,
               **dict.fromkeys(XskRings.KEYS, int),
               "fastpath": str, "tun_sources": list,
               **dict.fromkeys(NeighbourLimits.KEYS, (int, float))}
VIP_KEYS = {"name": str, "address": str, "port": int, "protocol": str,
            "mode": str, "scheduler": str, "persistence": (int, str),
            "health": dict, "fallback": str, "real": list, "on_down": str,
            **L7Options.KEYS}       # mode = "l7" (HAProxy) only
REAL_KEYS = {"address": str, "port": int, "weight": int}
_KIND = {int: "an integer", str: "a string", dict: "a table",
         list: "an array", bool: "true or false", (int, float): "a number",
         (int, str): 'seconds, or "source" (mode = "l7")'}


@dataclass
class Config:
    """What an engine runs with: the [engine] keys and the services.  From
    a file (load, parse) or from the command line alone (path None,
    services from parse_services); with_flags applies `pyfwd start`'s
    flags."""

    path: "str | None"
    iface: "str | None" = None
    inside_iface: "str | None" = None
    snat_address: "str | None" = None
    snat_ports: "str | None" = None
    control_socket: str = DEFAULT_PATH
    metrics: "str | None" = None
    dashboard_token: "str | None" = None    # control.web.token's file
    role: str = "active"
    neighbour_stale: float = NEIGHBOUR_STALE
    state_file: "str | None" = None
    services: list = field(default_factory=list)
    ha: HaOptions = field(default_factory=HaOptions)
    bgp: BgpOptions = field(default_factory=BgpOptions)    # [bgp]
    neighbour_limits: NeighbourLimits = field(
        default_factory=NeighbourLimits)
    timeouts: dict = field(default_factory=dict)    # [engine.timeouts]
    new_flows_per_second: int = 0       # per queue; 0: no cap
    rings: XskRings = field(default_factory=XskRings)   # AF_XDP sizes
    poll: str = POLL_DEFAULT            # dataplane.io.POLL_MODES
    fastpath: str = "off"               # dataplane.fastpath.MODES
    tun_sources: list = field(default_factory=list)  # control.tunnel

    def ports(self):
        """The SNAT port range (low, high): snat_ports, or SNAT_PORTS when
        neither the file nor a flag gave one.  ConfigError for a bad one."""
        if self.snat_ports is None:
            return SNAT_PORTS
        return parse_ports(self.snat_ports)

    def with_flags(self, *, iface=None, inside_iface=None, snat_address=None,
                   snat_ports=None, control_socket=None, metrics=None,
                   role=None, neighbour_stale=None, rings=None,
                   poll=None, dashboard_token=None):
        """This config with `pyfwd start`'s flags over it; a new Config.

        A flag given (not None, not empty) replaces the [engine] key of
        the same name; a flag not given leaves the file's value, else the
        default (snat_ports: model.SNAT_PORTS, see ports()).  A role given
        is checked as load(role=...) checks it: ConfigError for a value
        other than active or standby; so is
        neighbour_stale (seconds, 0 included) as the file's.  The VIPs' own
        settings (mode, scheduler, on_down) have no flag here: the CLI
        refuses --mode and --scheduler with a file.  rings: {XskRings key:
        value or None} of the flags (--frames, --rx-ring, ...), each given
        one over the file's; poll: "busy" | "adaptive".
        """
        if role:
            from .ha import parse_role
            parse_role(role)
        if poll and poll not in POLL_MODES:
            raise ConfigError(f"--poll {poll!r}: expected one of "
                              f"{', '.join(POLL_MODES)}")
        given = {k: v for k, v in (rings or {}).items() if v is not None}
        inside = inside_iface or self.inside_iface
        if given:
            rings = XskRings.of({**vars(self.rings), **given}, "--",
                                ifaces=2 if inside else 1)
        return dataclasses.replace(
            self, rings=rings if given else self.rings,
            poll=poll or self.poll, iface=iface or self.iface,
            inside_iface=inside_iface or self.inside_iface,
            snat_address=snat_address or self.snat_address,
            snat_ports=snat_ports or self.snat_ports,
            control_socket=control_socket or self.control_socket,
            metrics=metrics or self.metrics, role=role or self.role,
            dashboard_token=dashboard_token or self.dashboard_token,
            neighbour_stale=self.neighbour_stale if neighbour_stale is None
            else check_stale(neighbour_stale, "--neighbour-stale"))


def check_ifaces(iface, inside_iface, where=""):
    """ConfigError when the inside interface (two-arm NAT) is the outside
    one; where: "engine." for the file's keys."""
    if inside_iface is not None and inside_iface == iface:
        raise ConfigError(f"{where}inside_iface = {inside_iface!r}: the same "
                          f"as {where}iface; leave it out for one-arm")


def _check_keys(where, table, allowed):
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key (expected one of "
                              f"{', '.join(sorted(allowed))})")
        want = allowed[key]
        if not isinstance(value, want) or (want is not bool and
                                           isinstance(value, bool)):
            raise ConfigError(f"{where}.{key} = {value!r}: expected "
                              f"{_KIND[want]}")


def parse_timeouts(table, where="engine.timeouts"):
    """[engine.timeouts] -> {key: seconds} of those given (the core's
    defaults stand for the others: dataplane.core.TIMEOUTS); ConfigError
    for an unknown key or a value that is not whole seconds in range."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} = {table!r}: expected a table")
    out = {}
    for key, value in table.items():
        if key not in TIMEOUTS:
            raise ConfigError(f"{where}.{key}: unknown key (expected one of "
                              f"{', '.join(TIMEOUTS)})")
        if (isinstance(value, bool) or not isinstance(value, int)
                or not 1 <= value <= TIMEOUT_MAX):
            raise ConfigError(f"{where}.{key} = {value!r}: expected whole "
                              f"seconds, 1 to {TIMEOUT_MAX}")
        out[key] = value
    return out


def _required(where, table, key):
    if key not in table:
        raise ConfigError(f"{where}.{key}: missing")
    return table[key]


def _choice(where, key, value, choices):
    if value not in choices:
        raise ConfigError(f"{where}.{key} = {value!r}: expected one of "
                          f"{', '.join(choices)}")
    return value


def parse_fallback(text, vip, where="fallback"):
    """`ADDR[:PORT]` of the server that takes the VIP's traffic when no
    real server is healthy."""
    try:
        real = Real.parse(text)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if real.address.version != vip.address.version:
        raise ConfigError(f"{where} = {text!r}: expected an IPv"
                          f"{vip.address.version} address, as the VIP")
    return real


def parse_vip(v, where, names=()):
    """One [[vip]] table -> Service (ConfigError names what is wrong)."""
    _check_keys(where, v, VIP_KEYS)
    name = v.get("name")
    if name is not None:        # unnamed VIPs go by their address
        try:
            check_name(name)
        except ConfigError:
            raise ConfigError(f"{where}.name = {name!r}: expected "
                              f"{NAME_RULE}") from None
        where = f"vip {name!r}"
        if name in names:
            raise ConfigError(f"{where}: name used twice")
    try:
        vip = Vip(_required(where, v, "address"),
                  _required(where, v, "port"), v.get("protocol", "tcp"))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    mode = _choice(where, "mode", v.get("mode", Service.mode), MODES)
    sched = _choice(where, "scheduler", v.get("scheduler", Service.scheduler),
                    SCHEDULERS)
    reals = []
    for j, r in enumerate(v.get("real", [])):
        rwhere = f"{where}.real[{j}]"
        _check_keys(rwhere, r, REAL_KEYS)
        try:
            reals.append(Real(_required(rwhere, r, "address"),
                              r.get("port"), r.get("weight", 1)))
        except ConfigError as exc:
            raise ConfigError(f"{rwhere}: {exc}") from None
    health = None
    if "health" in v:
        health = HealthSpec.from_dict(v["health"], where=f"{where}.health")
        if health.via_vip:
            check_via_vip(f"{where}.health", mode, vip)
    fallback = None
    if "fallback" in v:
        if mode == "l7":
            raise ConfigError(f"{where}.fallback: for L4 VIPs (an L7 VIP "
                              "has HAProxy's own backup servers: not yet)")
        fallback = parse_fallback(v["fallback"], vip, f"{where}.fallback")
    on_down = _choice(where, "on_down", v.get("on_down", Service.on_down),
                      ON_DOWN)
    persistence = v.get("persistence", 0)
    if persistence == "source" and mode == "l7":   # a stick table on src
        persistence = SOURCE_EXPIRE
    elif isinstance(persistence, str):
        raise ConfigError(f"{where}.persistence = {persistence!r}: expected "
                          'seconds, or "source" with mode = "l7"')
    l7 = None
    given = [k for k in L7Options.KEYS if k in v]
    if mode == "l7":
        l7 = L7Options.from_dict({k: v[k] for k in given}, where)
    elif given:
        raise ConfigError(f"{where}.{given[0]}: only for mode = \"l7\" "
                          f"(this VIP's mode is {mode!r})")
    try:
        return Service(vip, reals, sched, mode,
                       persistence=persistence, name=name,
                       health=health, fallback=fallback, l7=l7,
                       on_down=on_down)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse(text, path="<config>", role=None):
    """Parse and validate config text; returns a Config.

    role: the high-availability role the engine starts in when the command
    line gives one ("active" or "standby"); it replaces [engine] role.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in doc:
        if key not in ("engine", "ha", "bgp", "vip"):
            raise ConfigError(f"{path}: {key}: unknown section (expected "
                              "[engine], [ha], [bgp] or [[vip]])")
    cfg = Config(path, ha=HaOptions.from_dict(doc.get("ha", {})),
                 bgp=BgpOptions.from_dict(doc.get("bgp", {})))
    engine = doc.get("engine", {})
    _check_keys("engine", engine, ENGINE_KEYS)
    for key in ENGINE_KEYS:
        if key in engine and key not in (*NeighbourLimits.KEYS,
                                          *XskRings.KEYS):
            setattr(cfg, key, engine[key])
    cfg.neighbour_limits = NeighbourLimits.from_config(engine)
    check_ifaces(cfg.iface, cfg.inside_iface, "engine.")
    cfg.timeouts = parse_timeouts(cfg.timeouts)
    cfg.rings = XskRings.of({k: engine.get(k) for k in XskRings.KEYS},
                            "engine.", ifaces=2 if cfg.inside_iface else 1)
    _choice("engine", "poll", cfg.poll, POLL_MODES)
    if not 0 <= cfg.new_flows_per_second <= NEW_FLOWS_MAX:
        raise ConfigError(f"engine.new_flows_per_second = "
                          f"{cfg.new_flows_per_second}: expected 0 (no cap)"
                          f" to {NEW_FLOWS_MAX} new flows a second per queue")
    _choice("engine", "fastpath", cfg.fastpath, fastpath_modes)
    if cfg.snat_address is not None:
        try:
            ipaddress.IPv4Address(cfg.snat_address)
        except ValueError:
            raise ConfigError(f"engine.snat_address = {cfg.snat_address!r}"
                              ": expected an IPv4 address") from None
    if cfg.snat_ports is not None:
        parse_ports(cfg.snat_ports)
    check_sources(cfg.tun_sources)
    cfg.neighbour_stale = check_stale(cfg.neighbour_stale,
                                      "engine.neighbour_stale")
    from .ha import parse_role
    parse_role(cfg.role, "engine.role")
    if role is not None:
        cfg.role = parse_role(role)
    if cfg.metrics is not None:
        from .metrics_http import parse_address
        parse_address(cfg.metrics)
    if cfg.dashboard_token is not None:
        cfg.dashboard_token = dashboard_token_path(cfg.dashboard_token,
                                                   path)
    vips = doc.get("vip", [])
    if not isinstance(vips, list) or not vips:
        raise ConfigError(f"{path}: no [[vip]] configured")
    seen = {}
    for i, v in enumerate(vips):
        svc = parse_vip(v, f"vip[{i}]", [s.name for s in cfg.services])
        if svc.vip in seen:
            raise ConfigError(f"vip {svc.name or i!r}: {svc.vip} is also "
                              f"vip {seen[svc.vip]!r}")
        seen[svc.vip] = svc.name or i
        cfg.services.append(svc)
    check_limits(cfg.services)      # those of the Engine's core
    check_shared_reals(cfg.services)    # an L7 and an L4 SNAT VIP
    return cfg


def load(path, role=None):
    """Read and validate a config file; ConfigError names what is wrong.
    role: see parse()."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"config {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(f"config {path}: not UTF-8 at line {line}, column "
                          f"{col} (byte 0x{data[exc.start]:02x}); TOML is "
                          "UTF-8") from None
    return parse(text, path, role)


def dashboard_token_path(text, path):
    """[engine] dashboard_token: the token file's path, a relative one
    beside the config file (path); ConfigError when empty.  The file
    itself is read at start and again when it changes
    (control.web.token.TokenFile)."""
    if not text.strip():
        raise ConfigError("engine.dashboard_token = '': expected the path "
                          "of the dashboard's token file")
    if os.path.isabs(text) or path in (None, "<config>"):
        return text
    return os.path.join(os.path.dirname(os.path.abspath(path)), text)


def parse_ports(text):
    """`LOW-HIGH` -> (low, high); ConfigError naming the text."""
    try:
        lo, hi = (int(x, 10) for x in str(text).split("-"))
    except ValueError:
        raise ConfigError(f"snat ports {text!r}: expected LOW-HIGH, e.g. "
                          "61000-65535") from None
    if not 1024 <= lo <= hi <= 65535:
        raise ConfigError(f"snat ports {text!r}: expected 1024 <= LOW <= "
                          "HIGH <= 65535")
    return lo, hi


def parse_services(vip_texts, real_texts, scheduler="maglev", mode="dr"):
    """Services from the command line: every --real serves every --vip
    (one VIP is the usual case)."""
    if not vip_texts:
        raise ConfigError("no --vip given (or use --config FILE)")
    reals = [Real.parse(t) for t in real_texts]
    return [Service(Vip.parse(v), list(reals), scheduler, mode)
            for v in vip_texts]
