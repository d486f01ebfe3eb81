"""The configuration file: one TOML file of VIPs and their real servers.

Validated up front: every error names the key, the value and what was
expected, before anything on the machine is touched.

    [engine]
    iface = "eth0"
    inside_iface = "eth1"       # two-arm NAT only
    snat_address = "10.0.0.2"   # SNAT only; default: iface's address
    snat_ports = "61000-65535"

    [[vip]]
    name = "pacs-web"
    address = "10.0.0.100"
    port = 80
    protocol = "tcp"
    mode = "dr"                 # dr | nat | snat
    scheduler = "maglev"        # maglev | wrr | rr

    [[vip.real]]
    address = "10.0.0.11"
    port = 8080                 # NAT/SNAT: port translation
    weight = 100
"""

import tomllib
from dataclasses import dataclass, field

from .errors import ConfigError
from .service import Real, Vip
from .tables import MODES, RING_INDEX, Service

ENGINE_KEYS = {"iface": str, "inside_iface": str, "snat_address": str,
               "snat_ports": str}
VIP_KEYS = {"name": str, "address": str, "port": int, "protocol": str,
            "mode": str, "scheduler": str, "real": list}
REAL_KEYS = {"address": str, "port": int, "weight": int}


@dataclass
class Config:
    path: str
    iface: "str | None" = None
    inside_iface: "str | None" = None
    snat_address: "str | None" = None
    snat_ports: "str | None" = None
    services: list = field(default_factory=list)
    names: dict = field(default_factory=dict)    # Vip -> name


def _check_keys(where, table, allowed):
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {table!r}")
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key (expected one of "
                              f"{', '.join(sorted(allowed))})")
        want = allowed[key]
        if not isinstance(value, want) or (want is int and
                                           isinstance(value, bool)):
            raise ConfigError(f"{where}.{key} = {value!r}: expected "
                              f"{'an integer' if want is int else 'a string' if want is str else 'an array of tables'}")


def _required(where, table, key):
    if key not in table:
        raise ConfigError(f"{where}.{key}: missing")
    return table[key]


def parse(text, path="<config>"):
    """Parse and validate config text; returns a Config."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in doc:
        if key not in ("engine", "vip"):
            raise ConfigError(f"{path}: {key}: unknown section (expected "
                              "[engine] or [[vip]])")
    cfg = Config(path)
    engine = doc.get("engine", {})
    _check_keys("engine", engine, ENGINE_KEYS)
    cfg.iface = engine.get("iface")
    cfg.inside_iface = engine.get("inside_iface")
    cfg.snat_address = engine.get("snat_address")
    cfg.snat_ports = engine.get("snat_ports")
    vips = doc.get("vip", [])
    if not isinstance(vips, list) or not vips:
        raise ConfigError(f"{path}: no [[vip]] configured")
    for i, v in enumerate(vips):
        where = f"vip[{i}]"
        _check_keys(where, v, VIP_KEYS)
        name = v.get("name", where)
        where = f"vip {name!r}"
        try:
            vip = Vip(_required(where, v, "address"),
                      _required(where, v, "port"),
                      v.get("protocol", "tcp"))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if vip in cfg.names:
            raise ConfigError(f"{where}: {vip} is also vip "
                              f"{cfg.names[vip]!r}")
        mode = v.get("mode", "dr")
        if mode not in MODES:
            raise ConfigError(f"{where}.mode = {mode!r}: expected one of "
                              f"{', '.join(MODES)}")
        sched = v.get("scheduler", "maglev")
        if sched not in RING_INDEX:
            raise ConfigError(f"{where}.scheduler = {sched!r}: expected one "
                              f"of {', '.join(sorted(RING_INDEX))}")
        reals = []
        for j, r in enumerate(v.get("real", [])):
            rwhere = f"{where}.real[{j}]"
            _check_keys(rwhere, r, REAL_KEYS)
            try:
                reals.append(Real(_required(rwhere, r, "address"),
                                  r.get("port"), r.get("weight", 1)))
            except ConfigError as exc:
                raise ConfigError(f"{rwhere}: {exc}") from None
        try:
            cfg.services.append(Service(vip, reals, sched, mode))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        cfg.names[vip] = name
    return cfg


def load(path):
    """Read and validate a config file; ConfigError names what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"config {path}: {exc.strerror}") from None
    return parse(text, path)
