"""pyfwd's exceptions.

Every error that pyfwd raises on purpose is a PyfwdError.  The CLI turns one into
a one-line message and a non-zero exit; any other exception reaching the user is
a bug.
"""


class PyfwdError(Exception):
    """Base class of pyfwd's own errors."""


class ConfigError(PyfwdError, ValueError):
    """A configuration value (file, CLI flag or API argument) is invalid.

    The message names the key, the value and what was expected.
    """


class DataplaneError(PyfwdError, OSError):
    """A call into the C data plane failed; carries the errno it returned."""

    def __init__(self, errno_, message):
        OSError.__init__(self, errno_, message)


class BuildError(PyfwdError):
    """The native parts of pyfwd are missing or were built wrong."""


class LabError(PyfwdError):
    """Building, using or removing a namespace lab failed."""
