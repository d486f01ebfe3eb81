"""The dashboard's token: the secret its actions need.

The token is the content of a file that only the engine's user may read
(`pyfwd start --dashboard-token FILE`, or [engine] dashboard_token): the
file must be a regular file, owned by the engine's user, with no
permission for group or others (chmod 600 or 400), and hold one line of
at least TOKEN_MIN characters.  Anything else refuses to start, with a
ConfigError saying what to fix:

    token = load_token("/etc/pyfwd/dashboard.token")
    same_token(token, request_header)      # constant time

The engine keeps a TokenFile: a new token is taken when the file
changes (a rotation needs no restart), and a file that no longer passes
the checks above leaves no token at all (actions refused, a warning
logged) rather than the old one, which may be the leaked one.

Make one with `head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE`.
"""

import errno
import hmac
import logging
import os
import stat
import threading

from ...errors import ConfigError

log = logging.getLogger("pyfwd.control.web")

TOKEN_MIN = 16          # characters
TOKEN_MAX = 4096        # bytes read
MAKE_ONE = ("make one with: head -c 32 /dev/urandom | base64 > FILE; "
            "chmod 600 FILE")


def load_token(path, euid=None):
    """The token in the file at `path` (str, surrounding blanks cut).
    euid: the user who must own it (default: this process's).  Raises
    ConfigError naming the file and the problem: missing, not a regular
    file (a symbolic link included: give the file itself), unreadable,
    owned by another user, readable or writable by group or others,
    empty, too short, not one line of text."""
    euid = os.geteuid() if euid is None else euid
    where = f"dashboard token {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            raise ConfigError(f"{where}: is a symbolic link: give the file "
                              "itself") from None
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{where}: not a regular file")
        if st.st_uid != euid:
            raise ConfigError(f"{where}: owned by uid {st.st_uid}, not by "
                              f"the engine's user (uid {euid}); chown it")
        if st.st_mode & 0o077:
            raise ConfigError(f"{where}: mode {stat.S_IMODE(st.st_mode):04o}"
                              " lets group or others at it; chmod 600 it")
        data = os.read(fd, TOKEN_MAX + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: not read: {exc.strerror or exc}") \
            from None
    finally:
        os.close(fd)
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not ASCII text; {MAKE_ONE}") from None
    if len(data) > TOKEN_MAX or "\n" in token or not token.isprintable():
        raise ConfigError(f"{where}: expected one line of text (at most "
                          f"{TOKEN_MAX} bytes); {MAKE_ONE}")
    if len(token) < TOKEN_MIN:
        raise ConfigError(f"{where}: {len(token)} characters, at least "
                          f"{TOKEN_MIN} expected; {MAKE_ONE}")
    return token


class TokenFile:
    """The token of the file at `path`, read again when the file changes
    (its inode, size, times, mode or owner); load_token()'s checks each
    time.

        tokens = TokenFile(path)    # ConfigError: the file will not do
        tokens.current()            # the token, or None: the file changed
                                    # and no longer passes (logged)
    """

    def __init__(self, path, euid=None):
        self.path, self._euid = path, euid
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._token = load_token(path, euid)

    def _stat(self):
        try:
            st = os.lstat(self.path)
        except OSError as exc:
            return exc.errno
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                st.st_mode, st.st_uid)

    def current(self):
        with self._lock:
            stamp = self._stat()
            if stamp == self._stamp:
                return self._token
            self._stamp = stamp
            try:
                self._token = load_token(self.path, self._euid)
            except ConfigError as exc:
                self._token = None
                log.warning("%s: the dashboard's actions are refused until "
                            "it is mended", exc)
            else:
                log.info("dashboard token %s: read again (it changed)",
                         self.path)
            return self._token


def same_token(token, given):
    """True when `given` (a header's value, or None) is `token`; the
    comparison takes the same time wherever they differ."""
    if token is None or given is None:
        return False
    return hmac.compare_digest(token.encode("ascii"),
                               given.strip().encode("utf-8", "replace"))


__all__ = ["load_token", "same_token", "TokenFile", "TOKEN_MIN"]
