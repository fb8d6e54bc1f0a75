"""The stored layout (SPEC.md section 10): decoding it without trusting it,
its fingerprint (section 7), and turning data bytes into Python values and
back."""

import struct
import sys

from ._errors import Error

MAX_DEPTH = 32

# Primitive codes 1..14, in the order of the Rust `Primitive` enum.
_NAMES = ("u8", "u16", "u32", "u64", "u128", "i8", "i16", "i32", "i64", "i128", "f32", "f64", "usize", "isize")
_FIXED = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "u128": 16, "i8": 1, "i16": 2, "i32": 4, "i64": 8, "i128": 16, "f32": 4, "f64": 8}
_UNSIGNED_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


class Primitive:
    __slots__ = ("kind", "size", "align")

    def __init__(self, kind, size, align):
        self.kind, self.size, self.align = kind, size, align

    def name(self):
        return self.kind


class Array:
    __slots__ = ("element", "len", "size", "align")

    def __init__(self, element, length, size, align):
        self.element, self.len, self.size, self.align = element, length, size, align


class Struct:
    __slots__ = ("name", "size", "align", "fields", "by_name")

    def __init__(self, name, size, align, fields):
        self.name, self.size, self.align, self.fields = name, size, align, fields
        self.by_name = {f[0]: f for f in fields}


class LayoutError(ValueError):
    pass


def decode(data):
    """Decodes stored layout bytes; raises :class:`LayoutError`."""
    r = _Reader(bytes(data))
    layout = r.node(0)
    if r.pos != len(r.b):
        raise LayoutError("bytes are left after the layout")
    return layout


class _Reader:
    def __init__(self, b):
        self.b, self.pos = b, 0

    def take(self, n):
        if self.pos + n > len(self.b):
            raise LayoutError("the layout bytes end in the middle of a node")
        out = self.b[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self, n):
        return int.from_bytes(self.take(n), "little")

    def name(self):
        try:
            return self.take(self.int(2)).decode("utf-8")
        except UnicodeDecodeError:
            raise LayoutError("a name in the layout is not UTF-8") from None

    def node(self, depth):
        if depth > MAX_DEPTH:
            raise LayoutError("the layout nests deeper than %d levels" % MAX_DEPTH)
        tag = self.int(1)
        pow2 = lambda a: a > 0 and a & (a - 1) == 0  # noqa: E731
        if tag == 1:
            code = self.int(1)
            if not 1 <= code <= len(_NAMES):
                raise LayoutError("unknown primitive kind %d" % code)
            kind = _NAMES[code - 1]
            size, align = self.int(4), self.int(4)
            ok = _FIXED[kind] == size if kind in _FIXED else size in (2, 4, 8)
            if not ok or not pow2(align) or align > size:
                raise LayoutError("a primitive's size or alignment does not fit its kind")
            return Primitive(kind, size, align)
        if tag == 2:
            length, size, align = self.int(8), self.int(8), self.int(4)
            element = self.node(depth + 1)
            if element.size * length != size or align != element.align:
                raise LayoutError("an array's size or alignment is not its element's times its length")
            return Array(element, length, size, align)
        if tag == 3:
            name = self.name()
            size, align, count = self.int(8), self.int(4), self.int(4)
            if not pow2(align):
                raise LayoutError("a struct's alignment is not a power of two")
            if count > (len(self.b) - self.pos) // 20:
                raise LayoutError("the layout bytes end in the middle of a node")
            fields = []
            for _ in range(count):
                fname = self.name()
                offset = self.int(8)
                layout = self.node(depth + 1)
                if offset + layout.size > size:
                    raise LayoutError("a field lies outside its struct")
                fields.append((fname, offset, layout))
            return Struct(name, size, align, fields)
        raise LayoutError("unknown layout tag %d" % tag)


# --- fingerprint (SPEC.md section 7, src/fingerprint.rs) ----------------------

_M64 = (1 << 64) - 1


class _Fp:
    def __init__(self, name, size, align):
        self.state, self.fields = 0xCBF29CE484222325, 0
        self.byte(ord("T")).str(name).int(size).int(align)

    def byte(self, b):
        self.state = ((self.state ^ b) * 0x100000001B3) & _M64
        return self

    def int(self, v):
        for b in (v & _M64).to_bytes(8, "little"):
            self.byte(b)
        return self

    def str(self, s):
        data = s.encode("utf-8")
        self.int(len(data))
        for b in data:
            self.byte(b)
        return self

    def field(self, name, offset, fp):
        self.byte(ord("F")).str(name).int(offset).int(fp)
        self.fields += 1
        return self

    def finish(self):
        self.byte(ord("E")).int(self.fields)
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return z ^ (z >> 31)


def fingerprint(layout):
    """The layout fingerprint, as ``ShmSafe::FINGERPRINT`` computes it."""
    if isinstance(layout, Primitive):
        return _Fp(layout.kind, layout.size, layout.align).finish()
    if isinstance(layout, Array):
        return _Fp("[]", layout.size, layout.align).field("", layout.len, fingerprint(layout.element)).finish()
    fp = _Fp(layout.name, layout.size, layout.align)
    for name, offset, sub in layout.fields:
        fp.field(name, offset, fingerprint(sub))
    return fp.finish()


def type_name(layout):
    if isinstance(layout, Primitive):
        return layout.kind
    if isinstance(layout, Array):
        return "[%s; %d]" % (type_name(layout.element), layout.len)
    return layout.name


def describe(layout):
    """The readable layout, as the Rust side writes it."""
    if isinstance(layout, Struct):
        inner = ", ".join("%s: %s @%d" % (n, type_name(t), o) for n, o, t in layout.fields)
        return "%s { %s }" % (layout.name, inner) if inner else "%s { }" % layout.name
    return type_name(layout)


# --- values -------------------------------------------------------------------------


def _code(p):
    """The ``struct`` format code of a primitive, or None (128-bit)."""
    k = p.kind
    if k == "f32":
        return "f"
    if k == "f64":
        return "d"
    if p.size not in _UNSIGNED_CODES:
        return None
    c = _UNSIGNED_CODES[p.size]
    return c.lower() if k.startswith("i") else c


_F32 = struct.Struct("=f")


def f32_value(x):
    """The shortest decimal that reads back as the same f32 (20.6, not
    20.600000381469727), as ``tshm show --json`` prints it."""
    if x != x or x in (float("inf"), float("-inf")) or x == int(x) and abs(x) < 2**24:
        return x
    for digits in range(1, 10):
        y = float("%.*g" % (digits, x))
        if _F32.unpack(_F32.pack(y))[0] == x:
            return y
    return x


def reader(layout):
    """A function ``(buffer, offset) -> value``: a struct becomes a dict by
    field name, an array a list, a number an int or float."""
    if isinstance(layout, Primitive):
        code = _code(layout)
        if code is None:
            signed = layout.kind.startswith("i")
            n = layout.size
            return lambda b, o: int.from_bytes(bytes(b[o : o + n]), sys.byteorder, signed=signed)
        s = struct.Struct("=" + code)
        if code == "f":
            return lambda b, o: f32_value(s.unpack_from(b, o)[0])
        return lambda b, o: s.unpack_from(b, o)[0]
    if isinstance(layout, Array):
        el, n = layout.element, layout.len
        if isinstance(el, Primitive) and _code(el) is not None:
            s = struct.Struct("=%d%s" % (n, _code(el)))
            if el.kind == "f32":
                return lambda b, o: [f32_value(v) for v in s.unpack_from(b, o)]
            return lambda b, o: list(s.unpack_from(b, o))
        r, step = reader(el), el.size
        return lambda b, o: [r(b, o + i * step) for i in range(n)]
    fields = [(name, off, reader(t)) for name, off, t in layout.fields]
    return lambda b, o: {name: r(b, o + off) for name, off, r in fields}


def writer(layout, path="value"):
    """A function ``(buffer, offset, value)`` that stores ``value`` in the
    layout's encoding; a struct takes a mapping with every field, an array a
    sequence of its length. Raises ``ValueError``/``TypeError`` for values
    that do not fit."""
    if isinstance(layout, Primitive):
        code = _code(layout)
        kind = layout.kind
        if code is None:
            n, signed = layout.size, kind.startswith("i")

            def w128(b, o, v):
                _check_int(v, kind, path)
                try:
                    b[o : o + n] = int(v).to_bytes(n, sys.byteorder, signed=signed)
                except OverflowError:
                    raise ValueError("%s: %r does not fit in %s" % (path, v, kind)) from None

            return w128
        s = struct.Struct("=" + code)
        is_float = code in "fd"

        def wprim(b, o, v):
            if is_float:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise TypeError("%s: %s takes a number, not %r" % (path, kind, v))
            else:
                _check_int(v, kind, path)
            try:
                s.pack_into(b, o, v)
            except (struct.error, OverflowError):
                raise ValueError("%s: %r does not fit in %s" % (path, v, kind)) from None

        return wprim
    if isinstance(layout, Array):
        el, n, step = layout.element, layout.len, layout.element.size
        w = writer(el, path + "[]")

        def warr(b, o, v):
            items = list(v)
            if len(items) != n:
                raise ValueError("%s: an array of %d elements takes %d values, not %d" % (path, n, n, len(items)))
            for i, item in enumerate(items):
                w(b, o + i * step, item)

        return warr
    fields = [(name, off, writer(t, path + "." + name)) for name, off, t in layout.fields]

    def wstruct(b, o, v):
        get = _field_getter(v, path)
        for name, off, w in fields:
            w(b, o + off, get(name))

    return wstruct


def _check_int(v, kind, path):
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("%s: %s takes an int, not %r" % (path, kind, v))


def _field_getter(v, path):
    if isinstance(v, dict):

        def get(name):
            if name not in v:
                raise ValueError("%s: the value has no field %r" % (path, name))
            return v[name]

        return get
    raise TypeError("%s: a struct takes a dict of its fields, not %r" % (path, type(v).__name__))


def numpy_dtype(layout, np):
    """The numpy dtype of ``layout`` (a structured dtype for a struct, a
    subarray for an array), in the machine's byte order. 128-bit integers
    have no numpy type: :class:`Error` ``Unknown``."""
    if isinstance(layout, Primitive):
        kind = layout.kind
        if kind in ("u128", "i128"):
            raise Error("Unknown", "numpy has no %s type" % kind)
        if kind in ("usize", "isize"):
            kind = ("u" if kind == "usize" else "i") + str(8 * layout.size)
        letter = {"u": "u", "i": "i", "f": "f"}[kind[0]]
        return np.dtype("=%s%d" % (letter, int(kind[1:]) // 8))
    if isinstance(layout, Array):
        return np.dtype((numpy_dtype(layout.element, np), (layout.len,)))
    return np.dtype(
        {
            "names": [f[0] for f in layout.fields],
            "formats": [numpy_dtype(f[2], np) for f in layout.fields],
            "offsets": [f[1] for f in layout.fields],
            "itemsize": layout.size,
        }
    )
