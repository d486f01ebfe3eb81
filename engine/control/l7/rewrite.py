"""The URL rewriting and redirect keys of an L7 http VIP (`Rewrite`), and
the HAProxy directives they become (`rewrite_lines`).

    replace_path = { "^/viewer/(.*)" = "/ohif/\\\\1" }  # replace-path
    set_path = "/index.html"                          # set-path
    replace_host = { "^pacs\\\\.old$" = "pacs.new" }  # replace-header Host
    set_host = "pacs.internal"                        # set-header Host
    redirect_scheme = "https"           # http-request redirect scheme https
    redirect_prefix = "https://pacs.example.org"      # redirect prefix
    redirect_location = { "/" = "/viewer/" }          # location, by path
    redirect_code = 302                 # 301, 302 (default), 303, 307, 308

Regexes are HAProxy's (PCRE): pyfwd passes them as they are and `haproxy
-c` (check-config, start, every change) judges them, its message naming
the VIP.  Replacements, set_path and set_host are HAProxy log-format
strings (`\\1` a group, `%[src]` a sample, `%%` a percent sign).  The
redirects come first (a redirected request is not rewritten), then the
path, then the Host.  redirect_scheme skips a request that came over TLS
already (`unless { ssl_fc }`).
"""

from dataclasses import dataclass

from ...errors import ConfigError

REDIRECT_CODES = (301, 302, 303, 307, 308)
SCHEMES = ("https", "http")


@dataclass(frozen=True)
class Rewrite:
    """See the module's docstring; tables are ((key, value), ...) in
    config order."""

    replace_path: tuple = ()
    set_path: str = None
    replace_host: tuple = ()
    set_host: str = None
    redirect_scheme: str = None
    redirect_prefix: str = None
    redirect_location: tuple = ()
    redirect_code: int = 302

    KEYS = {"replace_path": dict, "set_path": str, "replace_host": dict,
            "set_host": str, "redirect_scheme": str, "redirect_prefix": str,
            "redirect_location": dict, "redirect_code": int}

    def __bool__(self):
        return any(getattr(self, k) for k in self.KEYS if
                   k != "redirect_code")

    @classmethod
    def from_dict(cls, d, where, http):
        """The rewrite keys of `d`; ConfigError naming the key otherwise
        (every key needs l7_mode http)."""
        def bad(key, value, expected):
            return ConfigError(f"{where}: {key} {value!r}: expected "
                               f"{expected}")

        def text(key, value):
            if not isinstance(value, str) or not value or \
                    any(c in value for c in "\r\n\0"):
                raise bad(key, value, "a non-empty string without CR, LF "
                          "or NUL")
            return value

        given = [k for k in cls.KEYS if k in d]
        if given and not http:
            raise bad(given[0], d[given[0]], f"no {given[0]} with l7_mode "
                      "tcp (rewrites and redirects are HTTP)")
        out = {}
        for key in ("replace_path", "replace_host", "redirect_location"):
            table = d.get(key, {})
            if not isinstance(table, dict):
                raise bad(key, table, "a table of \"from\" = \"to\" strings")
            for k, v in table.items():
                text(key, k)
                text(f"{key}.{k}", v)
            out[key] = tuple(table.items())
        for key in ("set_path", "set_host", "redirect_prefix"):
            if key in d:
                out[key] = text(key, d[key])
        for key, value in out.get("redirect_location", ()):
            if not value.startswith("/") and "://" not in value:
                raise bad(f"redirect_location.{key}", value, "a path "
                          "(/...) or an absolute URL")
        if "redirect_scheme" in d:
            if d["redirect_scheme"] not in SCHEMES:
                raise bad("redirect_scheme", d["redirect_scheme"],
                          "one of " + ", ".join(SCHEMES))
            out["redirect_scheme"] = d["redirect_scheme"]
        code = d.get("redirect_code", 302)
        if isinstance(code, bool) or code not in REDIRECT_CODES:
            raise bad("redirect_code", code, "one of " +
                      ", ".join(map(str, REDIRECT_CODES)))
        out["redirect_code"] = code
        return cls(**out)


def rewrite_lines(rw, quote):
    """The `http-request` lines of a Rewrite; quote(word) quotes a word."""
    code = rw.redirect_code
    lines = []
    if rw.redirect_scheme:
        lines.append(f"http-request redirect scheme {rw.redirect_scheme} "
                     f"code {code} unless {{ ssl_fc }}")
    for path, location in rw.redirect_location:
        lines.append(f"http-request redirect location {quote(location)} "
                     f"code {code} if {{ path {quote(path)} }}")
    if rw.redirect_prefix:
        lines.append(f"http-request redirect prefix "
                     f"{quote(rw.redirect_prefix)} code {code}")
    for regex, repl in rw.replace_path:
        lines.append(f"http-request replace-path {quote(regex)} "
                     f"{quote(repl)}")
    if rw.set_path:
        lines.append(f"http-request set-path {quote(rw.set_path)}")
    for regex, repl in rw.replace_host:
        lines.append(f"http-request replace-header Host {quote(regex)} "
                     f"{quote(repl)}")
    if rw.set_host:
        lines.append(f"http-request set-header Host {quote(rw.set_host)}")
    return ["    " + line for line in lines]


__all__ = ["REDIRECT_CODES", "Rewrite", "rewrite_lines"]
