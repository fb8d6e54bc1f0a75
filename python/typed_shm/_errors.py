"""Exceptions. Every failure is an :class:`Error` whose ``kind`` names the
Rust ``ErrorKind`` it corresponds to (``"NotFound"``, ``"Corrupted"``, ...)."""

KINDS = (
    "PermissionDenied",
    "InvalidSize",
    "KeyError",
    "AlreadyExists",
    "NotFound",
    "LockError",
    "OutOfResources",
    "LayoutMismatch",
    "IncompatibleVersion",
    "Corrupted",
    "TimedOut",
    "Unknown",
)


class Error(Exception):
    """A typed-shm failure. ``kind`` is one of :data:`KINDS` (or
    ``"Poisoned"`` for :class:`PoisonedError`)."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind

    def __repr__(self):
        return "%s(kind=%r, %r)" % (type(self).__name__, self.kind, str(self))


class PoisonedError(Error):
    """The segment is poisoned: a holder died or abandoned a write, and nobody
    called ``clear_poison()``. ``value`` is the data as it stands (possibly
    half-written); ``version`` the version it was read at (``None`` when
    raised by ``lock()``)."""

    def __init__(self, message, value=None, version=None):
        super().__init__("Poisoned", message)
        self.value = value
        self.version = version
