"""The objects ``Handle.lock()`` yields: live views of the data while the
lock is held. Struct fields are attributes (and items: ``v["0"]`` for tuple
structs), arrays and slices are sequences, nested structs and arrays are
nested views, numbers are read as Python numbers. Assigning a field or an
element writes it through; a whole nested struct or array takes a dict or a
sequence."""

from . import _layout as L
from ._errors import Error


class _Session:
    """One held lock: where the data is, whether it may be written, and what
    the first write must do first. Views check ``active`` on every access."""

    __slots__ = ("buf", "offset", "writable", "active", "wrote", "before_write", "key")

    def __init__(self, buf, offset, writable, before_write, key):
        self.buf, self.offset, self.writable = buf, offset, writable
        self.before_write, self.key = before_write, key
        self.active, self.wrote = True, False

    def check(self):
        if not self.active:
            raise Error("LockError", "segment %r: this view was used after its lock was released" % self.key)

    def write(self, fn, off, value):
        self.check()
        if not self.writable:
            raise Error("PermissionDenied", "segment %r: this handle is read-only; it cannot assign" % self.key)
        if isinstance(value, _View):
            value = to_python(value)
        # Encode into a scratch copy first: a value that does not fit raises
        # before anything is written (and before the sequence word turns odd).
        size = _size_of(fn)
        scratch = bytearray(size)
        fn(scratch, 0, value)
        if not self.wrote:
            self.before_write()
            self.wrote = True
        self.buf[off : off + size] = scratch


def _size_of(fn):
    return fn.size


def _bind(layout, path):
    w = L.writer(layout, path)

    def fn(b, o, v):
        w(b, o, v)

    fn.size = layout.size
    return fn


class _View:
    __slots__ = ("_s", "_layout", "_off", "_read")

    def __init__(self, session, layout, off):
        object.__setattr__(self, "_s", session)
        object.__setattr__(self, "_layout", layout)
        object.__setattr__(self, "_off", off)
        object.__setattr__(self, "_read", None)

    def _value(self):
        self._s.check()
        if self._read is None:
            object.__setattr__(self, "_read", L.reader(self._layout))
        return self._read(self._s.buf, self._off)

    def __eq__(self, other):
        if isinstance(other, _View):
            other = to_python(other)
        return self._value() == other

    __hash__ = None

    def __repr__(self):
        return "<%s %r>" % (type(self).__name__, self._value())


def _child(session, layout, off):
    if isinstance(layout, L.Struct):
        return StructView(session, layout, off)
    if isinstance(layout, L.Array):
        return ArrayView(session, layout.element, layout.len, off)
    session.check()
    return L.reader(layout)(session.buf, off)


class StructView(_View):
    __slots__ = ()

    def _field(self, name):
        f = self._layout.by_name.get(name)
        if f is None:
            raise AttributeError("%s has no field %r" % (self._layout.name, name))
        return f

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        _, off, t = self._field(name)
        return _child(self._s, t, self._off + off)

    def __setattr__(self, name, value):
        _, off, t = self._field(name)
        self._s.write(_bind(t, name), self._off + off, value)

    def __getitem__(self, name):
        try:
            return self.__getattr__(name)
        except AttributeError:
            raise KeyError(name) from None

    def __setitem__(self, name, value):
        try:
            self._field(name)
        except AttributeError:
            raise KeyError(name) from None
        self.__setattr__(name, value)

    def __dir__(self):
        return [f[0] for f in self._layout.fields]

    def keys(self):
        return [f[0] for f in self._layout.fields]


class ArrayView(_View):
    """A fixed-length sequence (an array, or the elements of a slice
    segment)."""

    __slots__ = ("_el", "_len")

    def __init__(self, session, element, length, off):
        super().__init__(session, L.Array(element, length, element.size * length, element.align), off)
        object.__setattr__(self, "_el", element)
        object.__setattr__(self, "_len", length)

    def __len__(self):
        return self._len

    def _index(self, i):
        if not isinstance(i, int):
            raise TypeError("array indices are integers, not %r" % type(i).__name__)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("index out of range for an array of %d" % self._len)
        return self._off + i * self._el.size

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._len))]
        return _child(self._s, self._el, self._index(i))

    def __setitem__(self, i, value):
        if isinstance(i, slice):
            idx = range(*i.indices(self._len))
            values = list(value)
            if len(values) != len(idx):
                raise ValueError("slice assignment cannot change the length of a shared array")
            for j, v in zip(idx, values):
                self[j] = v
            return
        self._s.write(_bind(self._el, "[%d]" % i), self._index(i), value)

    def __iter__(self):
        for i in range(self._len):
            yield self[i]

    def __setattr__(self, name, value):
        raise AttributeError("an array view has no attribute %r" % name)


class ValueView(_View):
    """A segment holding one number: read and assign ``.value``."""

    __slots__ = ()

    @property
    def value(self):
        return self._value()

    @value.setter
    def value(self, v):
        self._s.write(_bind(self._layout, "value"), self._off, v)

    def __setattr__(self, name, value):
        if name != "value":
            raise AttributeError("a number view has only .value")
        ValueView.value.fset(self, value)


def top_view(session, layout, count, is_slice):
    if is_slice:
        return ArrayView(session, layout, count, session.offset)
    if isinstance(layout, L.Struct):
        return StructView(session, layout, session.offset)
    if isinstance(layout, L.Array):
        return ArrayView(session, layout.element, layout.len, session.offset)
    return ValueView(session, layout, session.offset)


def to_python(view):
    """The plain value of a view (dicts, lists, numbers), as ``snapshot()``
    gives it; anything else is returned as it is."""
    if isinstance(view, _View):
        return view._value()
    return view
