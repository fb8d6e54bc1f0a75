"""typed_shm: attach to typed-shm segments from Python.

A pure-Python peer of the Rust library (standard library only), following
SPEC.md: it takes part in the lock, commit, snapshot, change-notification
and liveness protocols, and decodes the data from the layout every segment
stores. See README.md for what it relies on.

>>> import typed_shm
>>> with typed_shm.attach("telemetry") as h:          # doctest: +SKIP
...     h.snapshot()
...     with h.lock() as v:
...         v.seq += 1
"""

from ._errors import KINDS, Error, PoisonedError
from ._handle import Handle, attach, native_key
from ._views import ArrayView, StructView, ValueView, to_python

__all__ = [
    "KINDS",
    "ArrayView",
    "Error",
    "Handle",
    "PoisonedError",
    "StructView",
    "ValueView",
    "attach",
    "native_key",
    "to_python",
]

__version__ = "0.1.0"
