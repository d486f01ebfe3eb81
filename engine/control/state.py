"""The operator's changes: what `pyfwd ctl` changed over the config file.

A drain, halt, weight, added or removed real server, added or removed VIP
made through the control socket is kept here as one entry, and written to
a state file beside the config (`<config>.state`, JSON, atomically), so
that it survives `pyfwd ctl reload` and a restart.  The config file stays
the operator's own: pyfwd never writes it.

    ops = OperatorState.load("/etc/pyfwd.toml.state")   # or OperatorState()
    ops.admin(vip, "10.0.0.11", "drain")        # after the command applied
    services, state, notes = ops.apply(base)    # base: the file's services
    ops.save(config_sha256)

Each entry records what the file said about the same thing when the change
was made (`file`: the real as `ADDR[:PORT]@W`, a VIP's digest, or None).
apply() replays the entries over the file's services; an entry whose thing
the file now says differently (someone edited it meanwhile), or that no
longer applies (its real or VIP left the file), is a conflict: reported,
kept, not applied (the file's word stands) until `pyfwd ctl forget` drops
it or a new `ctl` change on the same thing replaces it.  An entry the file
now agrees with is absorbed (dropped, and said).
"""

import dataclasses
import hashlib
import json
import os
import time

from ..errors import ConfigError
from ..model import Real, Vip

VERSION = 1
WHATS = ("drain", "halt", "weight", "add-real", "del-real", "add-vip",
         "del-vip")
# The aspect of a thing an entry sets: one entry per (vip, real, aspect).
ASPECT = {"drain": "admin", "halt": "admin", "weight": "weight",
          "add-real": "presence", "del-real": "presence",
          "add-vip": "presence", "del-vip": "presence"}
# The order entries replay in: VIPs, then reals, weights, admin states.
ORDER = {"del-vip": 0, "add-vip": 1, "del-real": 2, "add-real": 3,
         "weight": 4, "drain": 5, "halt": 5}


def atomic_write(path, text, mode=0o600, durable=True):
    """Write text to path atomically: a temporary file beside it, renamed
    over path.  A reader sees the old file or the new one; durable: after
    a crash too (the file and its directory fsynced)."""
    d = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if not durable:
        return
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def file_sha256(path):
    """The sha256 (hex) of the file at path, or None if it cannot be
    read."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def vip_digest(service):
    """A short digest of everything a VIP's definition says (a Service):
    two equal digests, the same VIP."""
    return hashlib.sha256(repr(service).encode()).hexdigest()[:16]


@dataclasses.dataclass
class Change:
    """One operator change.  vip: the VIP as ADDR:PORT/PROTO; real: the
    real's key (None for the VIP itself); what: one of WHATS; value: the
    weight (weight), the real as ADDR[:PORT]@W (add-real, del-real: the one
    removed), the [[vip]] table (add-vip); file: what the file said when
    the change was made (see the module's docstring); since: epoch
    seconds; by: who ("ctl")."""

    vip: str
    real: "str | None"
    what: str
    value: object = None
    file: object = None
    since: float = 0.0
    by: str = "ctl"

    @property
    def key(self):
        return (self.vip, self.real, ASPECT[self.what])

    def label(self):
        """`10.0.0.100:80/tcp 10.0.0.11: weight 5`, for reports."""
        what = self.what
        if self.what == "weight" or self.what == "add-real":
            what += f" {self.value}"
        return f"{self.vip}{' ' + self.real if self.real else ''}: {what}"

    @classmethod
    def from_dict(cls, d, where):
        """A Change from its JSON object; ConfigError naming where."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected an object, got {d!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - fields)
        if extra:
            raise ConfigError(f"{where}.{extra[0]}: unknown key (expected "
                              f"one of {', '.join(sorted(fields))})")
        if d.get("what") not in WHATS:
            raise ConfigError(f"{where}.what = {d.get('what')!r}: expected "
                              f"one of {', '.join(WHATS)}")
        if not isinstance(d.get("vip"), str):
            raise ConfigError(f"{where}.vip = {d.get('vip')!r}: expected "
                              "ADDR:PORT/PROTO")
        try:
            Vip.parse(d["vip"])
        except ConfigError as exc:
            raise ConfigError(f"{where}.vip: {exc}") from None
        real_level = d["what"] not in ("add-vip", "del-vip")
        if real_level != isinstance(d.get("real"), str):
            raise ConfigError(f"{where}.real = {d.get('real')!r}: expected "
                              + ("a real's ADDR[:PORT]" if real_level
                                 else "null (a VIP's change)"))
        if not isinstance(d.get("since", 0), (int, float)):
            raise ConfigError(f"{where}.since = {d['since']!r}: expected "
                              "epoch seconds")
        return cls(**d)


def _base_real(base, vip, key):
    """The Real `key` of VIP `vip` (text) in the services `base`, or None."""
    for s in base:
        if str(s.vip) == vip:
            return next((r for r in s.reals if r.key == key), None)
    return None


def _base_vip(base, vip):
    return next((s for s in base if str(s.vip) == vip), None)


def copy_services(services):
    """Copies of services (model.Service) whose reals lists are their own:
    what a change may edit while the engine keeps the originals."""
    out = []
    for s in services:
        c = dataclasses.replace(s)
        c.reals = list(s.reals)
        out.append(c)
    return out


class OperatorState:
    """The operator's changes (see the module's docstring), kept in `path`
    (None: in memory only, for an engine without a config file).  entries:
    {(vip, real, aspect): Change}; conflicts: {key: why} of the entries the
    last apply() could not apply.  clock: epoch seconds, for tests."""

    def __init__(self, path=None, *, clock=time.time):
        self.path = path
        self.entries = {}
        self.conflicts = {}
        self.config_sha256 = None       # of the file at the last save
        self._clock = clock

    # --- the file ---------------------------------------------------------

    @classmethod
    def load(cls, path, *, clock=time.time):
        """The state in path (empty when there is no file yet).
        ConfigError naming the file and what is wrong in it."""
        ops = cls(path, clock=clock)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return ops
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"state file {path}: {exc}") from None
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"state file {path}: not JSON ({exc}); fix it "
                              "or move it away (the operator's changes in "
                              "it are then lost)") from None
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise ConfigError(f"state file {path}: expected an object with "
                              f"\"version\": {VERSION}")
        ops.config_sha256 = doc.get("config_sha256")
        changes = doc.get("changes", [])
        if not isinstance(changes, list):
            raise ConfigError(f"state file {path}: changes: expected a list")
        for i, d in enumerate(changes):
            ch = Change.from_dict(d, f"state file {path}: changes[{i}]")
            ops.entries[ch.key] = ch
        return ops

    def save(self, config_sha256=None):
        """Write the entries to the state file, atomically (nothing
        without a path).  OSError when the file system refuses."""
        self.config_sha256 = config_sha256
        if not self.path:
            return
        doc = {"version": VERSION, "config_sha256": config_sha256,
               "written": round(self._clock(), 3),
               "changes": [dataclasses.asdict(c) for c in self.ordered()]}
        atomic_write(self.path, json.dumps(doc, indent=1) + "\n")

    def ordered(self):
        return sorted(self.entries.values(),
                      key=lambda c: (ORDER[c.what], c.vip, c.real or ""))

    def snapshot(self):
        """What restore() needs to put these entries back."""
        return (dict(self.entries), dict(self.conflicts), self.config_sha256)

    def restore(self, snap):
        self.entries, self.conflicts, self.config_sha256 = (
            dict(snap[0]), dict(snap[1]), snap[2])

    # --- recording a change (after it was checked) -------------------------

    def _set(self, vip, real, what, value=None, file=None):
        ch = Change(str(vip), real, what, value, file,
                    round(self._clock(), 3))
        old = self.entries.get(ch.key)
        if old and (old.what, old.value) == (what, value):
            ch.since = old.since        # the same change again: since then
        self.entries[ch.key] = ch
        self.conflicts.pop(ch.key, None)

    def _drop(self, vip, real, aspect):
        key = (str(vip), real, aspect)
        self.conflicts.pop(key, None)
        return self.entries.pop(key, None)

    def admin(self, vip, key, what):
        """drain, halt or online (which drops the entry) of real key."""
        if what == "online":
            self._drop(vip, key, "admin")
        else:
            self._set(vip, key, what)

    def weight(self, vip, key, weight, base):
        """The real's weight set to `weight`; base: the file's services."""
        added = self.entries.get((str(vip), key, "presence"))
        if added and added.what == "add-real":
            r = Real.parse(added.value)
            self._set(vip, key, "add-real",
                      str(Real(r.address, r.port, weight)))
            return
        br = _base_real(base, str(vip), key)
        if br is not None and br.weight == weight:
            self._drop(vip, key, "weight")      # back to the file's
        else:
            self._set(vip, key, "weight", weight,
                      str(br) if br is not None else None)

    def add_real(self, vip, real, base):
        """real (a Real) added."""
        removed = self._drop(vip, real.key, "presence")
        if removed is not None and removed.what == "del-real":
            if Real.parse(removed.value).weight != real.weight:
                self._set(vip, real.key, "weight", real.weight, removed.file)
            return
        br = _base_real(base, str(vip), real.key)
        self._set(vip, real.key, "add-real", str(real),
                  str(br) if br is not None else None)

    def del_real(self, vip, real, base):
        """real (the Real removed) removed."""
        self._drop(vip, real.key, "admin")
        self._drop(vip, real.key, "weight")
        added = self._drop(vip, real.key, "presence")
        if added is not None and added.what == "add-real":
            return
        br = _base_real(base, str(vip), real.key)
        self._set(vip, real.key, "del-real", str(real),
                  str(br) if br is not None else None)

    def add_vip(self, vip, spec, base):
        """The VIP vip added from its [[vip]] table spec (a dict)."""
        b = _base_vip(base, str(vip))
        self._drop(vip, None, "presence")
        self._set(vip, None, "add-vip", spec,
                  vip_digest(b) if b is not None else None)

    def del_vip(self, vip, base):
        """The VIP vip removed (its reals' entries go with it)."""
        for key in [k for k in self.entries if k[0] == str(vip)]:
            self._drop(*key)
        b = _base_vip(base, str(vip))
        if b is not None:
            self._set(vip, None, "del-vip", None, vip_digest(b))

    def forget(self, vip, real=None):
        """Drop the entries of vip's real `real` (None: every entry of the
        VIP, its own included); the Changes dropped."""
        keys = [k for k in self.entries
                if k[0] == str(vip) and (real is None or k[1] == real)]
        return [self._drop(*k) for k in keys]

    # --- replaying ----------------------------------------------------------

    def apply(self, base, parse_vip=None):
        """Replay the entries over `base` (the file's services, not
        changed): (services, admin state, notes).  notes: {"kept": [...],
        "conflicts": [...], "absorbed": [...]} as text.  Conflicting
        entries stay (in self.conflicts), absorbed ones are dropped.
        parse_vip(spec, where, names) -> Service: config.parse_vip (for
        add-vip entries)."""
        services = copy_services(base)
        state = {}
        notes = {"kept": [], "conflicts": [], "absorbed": []}
        self.conflicts = {}
        for ch in self.ordered():
            try:
                why = _replay(ch, base, services, state, parse_vip)
            except ConfigError as exc:
                why = str(exc)
            if why is None:
                notes["kept"].append(ch.label())
            elif why.startswith(_ABSORBED):
                del self.entries[ch.key]
                notes["absorbed"].append(f"{ch.label()} ({why})")
            else:
                self.conflicts[ch.key] = why
                notes["conflicts"].append(
                    f"{ch.label()}: not applied, {why}; `pyfwd ctl forget "
                    f"{ch.vip} {ch.real or 'all'}` drops it")
        return services, state, notes

    # --- what show and `ctl changes` tell -----------------------------------

    def marks(self, vip, real=None):
        """[{"by", "what", "since"[, "value"][, "conflict"]}] of the
        entries of vip's real `real` (None: of the VIP itself)."""
        out = []
        for aspect in ("presence", "weight", "admin"):
            ch = self.entries.get((str(vip), real, aspect))
            if ch is not None:
                m = {"by": ch.by, "what": ch.what, "since": ch.since}
                if ch.what in ("weight", "add-real"):
                    m["value"] = ch.value
                if ch.key in self.conflicts:
                    m["conflict"] = self.conflicts[ch.key]
                out.append(m)
        return out

    def rows(self):
        """Every entry as a JSON-ready dict, with its conflict if any."""
        return [{**dataclasses.asdict(ch),
                 "conflict": self.conflicts.get(ch.key)}
                for ch in self.ordered()]


_ABSORBED = "the file now says the same"


def _running(services, vip, key=None):
    s = next((s for s in services if str(s.vip) == vip), None)
    if s is None or key is None:
        return s, None
    return s, next((r for r in s.reals if r.key == key), None)


def _replay(ch, base, services, state, parse_vip):
    """Apply one Change to services/state (copies); None when applied,
    else why not (starting with _ABSORBED when the file agrees)."""
    if ch.what in ("add-vip", "del-vip"):
        return _replay_vip(ch, base, services, parse_vip)
    s, r = _running(services, ch.vip, ch.real)
    br = _base_real(base, ch.vip, ch.real)
    said = str(br) if br is not None else None
    if s is None:
        return f"no longer applies: VIP {ch.vip} is not configured"
    if ch.what in ("drain", "halt"):
        if r is None:
            return f"no longer applies: VIP {s.label} has no real {ch.real}"
        state[(s.vip, r.key)] = ch.what
        return None
    if ch.what == "del-real":
        if said == ch.file:
            if r is None:
                return f"{_ABSORBED} (no real {ch.real})"
            s.reals.remove(r)
            return None
        if br is None:
            return f"{_ABSORBED} (no real {ch.real})"
        return f"the file now says {said}, it said {ch.file} then"
    if ch.what == "add-real":
        new = Real.parse(ch.value)
        if said == ch.value:
            return f"{_ABSORBED} ({said})"
        if said != ch.file or r is not None:
            return f"the file now says {said or r}, it said {ch.file} then"
        s.check_real(new)
        s.reals.append(new)
        return None
    # weight
    if r is None:
        return f"no longer applies: VIP {s.label} has no real {ch.real}"
    if said != ch.file:
        if br is not None and br.weight == ch.value:
            return f"{_ABSORBED} ({said})"
        return f"the file now says {said}, it said {ch.file} then"
    s.reals[s.reals.index(r)] = Real(r.address, r.port, ch.value)
    return None


def _replay_vip(ch, base, services, parse_vip):
    b = _base_vip(base, ch.vip)
    now = vip_digest(b) if b is not None else None
    if ch.what == "del-vip":
        if b is None:
            return f"{_ABSORBED} (no VIP {ch.vip})"
        if now != ch.file:
            return "the file's definition of this VIP changed since"
        services.remove(next(s for s in services if s.vip == b.vip))
        return None
    others = [s for s in services if str(s.vip) != ch.vip]
    svc = parse_vip(ch.value, f"add-vip {ch.vip}",
                    [s.name for s in others if s.name])
    if now != ch.file:
        if now == vip_digest(svc):
            return f"{_ABSORBED} (VIP {ch.vip})"
        return ("the file now has this VIP" if ch.file is None else
                "the file's definition of this VIP changed since")
    i = next((i for i, s in enumerate(services) if str(s.vip) == ch.vip),
             None)
    if i is None:
        services.append(svc)
    else:
        services[i] = svc
    return None


__all__ = ["OperatorState", "Change", "atomic_write", "file_sha256",
           "vip_digest", "copy_services", "WHATS"]
