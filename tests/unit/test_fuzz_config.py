"""The config file fuzzed with hypothesis: any text, and a valid file with
any value for any key ([engine], [ha], [[vip]], its health table, L7 keys
and [[vip.real]]), gives a Config or a ConfigError, never another
exception."""

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from pyfwd.control import config
from pyfwd.control.ha import HaOptions
from pyfwd.control.health import spec as health_spec
from pyfwd.control.l7.options import L7Options
from pyfwd.errors import ConfigError

from .fuzzing import bounded

BASE = {
    "engine": {"iface": "eth0", "snat_ports": "61000-61999"},
    "vip": [{"name": "web", "address": "10.0.0.100", "port": 80,
             "mode": "nat", "health": {"type": "tcp"},
             "real": [{"address": "10.0.0.11", "port": 8080,
                       "weight": 2}]}],
}
HEALTH_KEYS = sorted(set(health_spec._COMMON_KEYS).union(
    *health_spec._TYPE_KEYS.values()))
WHERE = {
    "top": ["engine", "ha", "vip", "x"],
    "engine": sorted(config.ENGINE_KEYS) + ["x"],
    "ha": list(HaOptions.KEYS) + ["x"],
    "vip": sorted(config.VIP_KEYS) + ["x"],
    "real": sorted(config.REAL_KEYS) + ["x"],
    "health": HEALTH_KEYS + ["x"],
}
PLAUSIBLE = st.sampled_from([
    "eth0", "eth1", "", "10.0.0.2", "fd00::2", "10.0.0.300", "0-65535",
    "61000-60000", "1-1", "65535-65536", "a-b", "-", "127.0.0.1:10104",
    ":0", "[::1]:99999", "active", "standby", "tcp", "udp", "sctp", "dr",
    "nat", "snat", "l7", "maglev", "wlc", "sh", "http", "dicom", "command",
    "/", "quiesce", "reset", "10.0.0.50:80", "192.168.50.1/24",
    "192.168.50.1/33", "x" * 300, "1.0", "nan", "\x00", "é"])
SCALARS = st.one_of(
    st.integers(-2**63, 2**63 - 1), st.floats(), st.booleans(), PLAUSIBLE,
    st.text(max_size=20), st.sampled_from([0, 1, -1, 255, 65535, 65536,
                                           0.0, -0.5, 1e300]))
VALUES = st.recursive(
    SCALARS, lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(HEALTH_KEYS + ["type", "address"]),
                        inner, max_size=3)), max_leaves=6)


def toml_value(v):
    """v as a TOML value (inline tables, arrays)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}"
                           for k, x in v.items()) + "}"


def toml(doc):
    """A document of tables and arrays of tables (BASE's shape), as TOML:
    each section an inline value, which TOML allows for all of them."""
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n"
                   for k, v in doc.items())


def parse(text):
    try:
        cfg = config.parse(text)
    except ConfigError as exc:
        assert str(exc)
        return None
    assert isinstance(cfg, config.Config) and cfg.services
    return cfg


def test_the_base_document_parses():
    cfg = parse(toml(BASE))
    assert cfg.services[0].name == "web" and cfg.ports() == (61000, 61999)


@st.composite
def edits(draw):
    """BASE with a few keys set to arbitrary values."""
    doc = json.loads(json.dumps(BASE))
    vip = doc["vip"][0]
    tables = {"top": doc, "engine": doc["engine"],
              "ha": doc.setdefault("ha", {}), "vip": vip,
              "real": vip["real"][0], "health": vip["health"]}
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(sorted(WHERE)))
        key = draw(st.sampled_from(WHERE[where]))
        if where == "vip" and key in L7Options.KEYS:
            vip["mode"] = draw(st.sampled_from(["l7", "nat"]))
        tables[where][key] = draw(VALUES)
    if draw(st.booleans()) and isinstance(doc.get("vip"), list):
        doc["vip"] = doc["vip"] + [json.loads(json.dumps(vip))]
    return doc


@bounded(600)
@given(edits())
def test_any_value_for_any_key(doc):
    try:
        text = toml(doc)
    except (TypeError, ValueError):
        return
    parse(text)


@bounded(300)
@given(st.one_of(st.text(max_size=200),
                 st.builds(lambda a, b, c: a[:b] + c + a[b:],
                           st.just(toml(BASE)), st.integers(0, 400),
                           st.text(max_size=20))))
def test_any_text(text):
    parse(text)
