"""HAProxy's word on the L7 VIPs before anything runs: the configuration
pyfwd would render, checked with `haproxy -c` (HAProxy.validate).

    check_haproxy(services)         # `pyfwd check-config`: a line to print
    validate_l7(proxy, services)    # the engine, before it takes a change

HAProxy refuses what pyfwd's own checks let through: a tls_cert file that
holds no private key or no certificate, a key that does not match, a
cipher or option this build lacks.  The message names the VIP HAProxy
refused (each L7 VIP is checked alone when the whole is refused).
"""

import shutil
import tempfile

from .haproxy import HAProxy
from .render import l7_vips, render
from ..services import l7
from ...errors import ConfigError

SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def validate_l7(proxy, services):
    """Check the configuration of `services` (the L7 ones) with proxy's
    HAProxy (`haproxy -c`; nothing is written that stays).

    Raises ConfigError naming the VIP that HAProxy refuses (or every L7
    VIP, when HAProxy refuses them together only) with HAProxy's message;
    ConfigError too from render() (a bad name, weight or timeout) and for
    a missing or old HAProxy.
    """
    try:
        proxy.validate(render(l7_vips(services), proxy.runtime_socket))
    except ConfigError as whole:
        if len(services) > 1:
            for s in services:
                try:
                    proxy.validate(render(l7_vips([s]),
                                          proxy.runtime_socket))
                except ConfigError as exc:
                    raise ConfigError(f"vip {s.label}: {exc}") from None
        labels = ", ".join(s.label for s in services)
        raise ConfigError(f"vip {labels}: {whole}") from None


def check_haproxy(services, binary="haproxy"):
    """`pyfwd check-config`'s L7 part: the L7 VIPs among `services` checked
    with HAProxy when it is installed.

    Returns a line saying what was checked, or that the L7 part was not
    checked (HAProxy is not installed: not an error here, `pyfwd start`
    refuses then), or None when there is no L7 VIP.  Raises ConfigError
    as validate_l7().
    """
    services = l7(services)
    if not services:
        return None
    n = f"{len(services)} L7 VIP(s)"
    # sbin: a user's PATH may leave it out, where Debian puts haproxy
    path = shutil.which(binary) or shutil.which(binary, path=SBIN)
    if path is None:
        return (f"{n} not checked by HAProxy: {binary!r} is not installed "
                "(`pyfwd start` needs it)")
    with tempfile.TemporaryDirectory(prefix="pyfwd-check-") as d:
        proxy = HAProxy(f"{d}/haproxy.cfg", f"{d}/haproxy.sock", path)
        version = proxy.check_binary()
        try:
            validate_l7(proxy, services)
        except ConfigError as exc:      # the file is gone: its name stays
            raise ConfigError(str(exc).replace(f"{d}/", "")) from None
    return f"{n} checked with HAProxy {version} (haproxy -c)"


__all__ = ["check_haproxy", "validate_l7"]
