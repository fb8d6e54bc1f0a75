//! Machine-readable layouts: [`TypeLayout`], the `const` tree that every
//! [`ShmSafe`](crate::ShmSafe) type carries as
//! [`LAYOUT`](crate::ShmSafe::LAYOUT), its byte encoding (stored in every
//! segment after the header), and [`Layout`], the owned tree that
//! [`decode`] gives back from those bytes without trusting them.
//!
//! # Encoding
//!
//! A layout is encoded as one *node*, depth first; every integer is
//! little-endian, every name UTF-8:
//!
//! | node | bytes |
//! |---|---|
//! | primitive | `1`, kind `u8` (see [`Primitive::code`]), size `u32`, align `u32` |
//! | array | `2`, length `u64`, size `u64`, align `u32`, then the element's node |
//! | struct | `3`, name length `u16`, name, size `u64`, align `u32`, field count `u32`, then per field: name length `u16`, name, offset `u64`, the field's node |
//!
//! Decoding checks every length against the bytes left, nesting up to
//! [`MAX_DEPTH`], primitive sizes against their kind, array sizes against
//! element size × length, alignments (powers of two) and that every field
//! lies inside its struct. The layout is built from the same facts as the
//! fingerprint (names, sizes, alignments, offsets), and
//! [`Layout::fingerprint`] recomputes it: a reader compares it with the
//! fingerprint in the header, so a stored layout that does not describe the
//! segment's type is refused.

use std::fmt;

use crate::fingerprint::FingerprintBuilder;

/// Deepest nesting of arrays and structs that [`decode`] accepts.
pub const MAX_DEPTH: usize = 32;

/// The primitive types a [`ShmSafe`](crate::ShmSafe) layout is made of.
///
/// # Examples
///
/// ```
/// use typed_shm::Primitive;
/// assert_eq!(Primitive::F32.name(), "f32");
/// assert_eq!(Primitive::from_code(Primitive::Usize.code()), Some(Primitive::Usize));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Primitive {
    /// `u8`
    U8,
    /// `u16`
    U16,
    /// `u32`
    U32,
    /// `u64`
    U64,
    /// `u128`
    U128,
    /// `i8`
    I8,
    /// `i16`
    I16,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `i128`
    I128,
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// `usize` (its width is the layout's size)
    Usize,
    /// `isize` (its width is the layout's size)
    Isize,
}

const PRIMITIVES: [Primitive; 14] = [
    Primitive::U8,
    Primitive::U16,
    Primitive::U32,
    Primitive::U64,
    Primitive::U128,
    Primitive::I8,
    Primitive::I16,
    Primitive::I32,
    Primitive::I64,
    Primitive::I128,
    Primitive::F32,
    Primitive::F64,
    Primitive::Usize,
    Primitive::Isize,
];

impl Primitive {
    /// The Rust name (`"u32"`, `"usize"`, …), as it enters the fingerprint.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(typed_shm::Primitive::I64.name(), "i64");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Primitive::U8 => "u8",
            Primitive::U16 => "u16",
            Primitive::U32 => "u32",
            Primitive::U64 => "u64",
            Primitive::U128 => "u128",
            Primitive::I8 => "i8",
            Primitive::I16 => "i16",
            Primitive::I32 => "i32",
            Primitive::I64 => "i64",
            Primitive::I128 => "i128",
            Primitive::F32 => "f32",
            Primitive::F64 => "f64",
            Primitive::Usize => "usize",
            Primitive::Isize => "isize",
        }
    }

    /// The byte that stands for this kind in the encoding: 1 to 14, in the
    /// order of the variants.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(typed_shm::Primitive::U8.code(), 1);
    /// assert_eq!(typed_shm::Primitive::Isize.code(), 14);
    /// ```
    pub const fn code(self) -> u8 {
        self as u8 + 1
    }

    /// The kind encoded as `code`, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(typed_shm::Primitive::from_code(0), None);
    /// ```
    pub fn from_code(code: u8) -> Option<Primitive> {
        PRIMITIVES.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// The size in bytes a value of this kind has, `None` for `usize` and
    /// `isize`, whose width depends on the target.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(typed_shm::Primitive::F64.fixed_size(), Some(8));
    /// assert_eq!(typed_shm::Primitive::Usize.fixed_size(), None);
    /// ```
    pub const fn fixed_size(self) -> Option<usize> {
        match self {
            Primitive::U8 | Primitive::I8 => Some(1),
            Primitive::U16 | Primitive::I16 => Some(2),
            Primitive::U32 | Primitive::I32 | Primitive::F32 => Some(4),
            Primitive::U64 | Primitive::I64 | Primitive::F64 => Some(8),
            Primitive::U128 | Primitive::I128 => Some(16),
            Primitive::Usize | Primitive::Isize => None,
        }
    }

    /// Whether the kind is a signed integer.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(typed_shm::Primitive::Isize.is_signed());
    /// assert!(!typed_shm::Primitive::F32.is_signed());
    /// ```
    pub const fn is_signed(self) -> bool {
        matches!(
            self,
            Primitive::I8
                | Primitive::I16
                | Primitive::I32
                | Primitive::I64
                | Primitive::I128
                | Primitive::Isize
        )
    }

    /// Whether the kind is a float.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(typed_shm::Primitive::F64.is_float());
    /// ```
    pub const fn is_float(self) -> bool {
        matches!(self, Primitive::F32 | Primitive::F64)
    }
}

/// The layout of a [`ShmSafe`](crate::ShmSafe) type as a `const` tree: a
/// primitive, an array, or a struct with named fields at their offsets.
/// Built at compile time (by `#[derive(ShmSafe)]` and this crate's impls),
/// from the same facts as the fingerprint; stored in every segment, where
/// tools read it back with [`decode`].
///
/// # Examples
///
/// ```
/// use typed_shm::{ShmSafe, TypeLayout};
///
/// #[derive(Clone, Copy, ShmSafe)]
/// #[repr(C)]
/// struct Telemetry { seq: u64, temps: [f32; 8] }
///
/// let TypeLayout::Struct { name, size, fields, .. } = Telemetry::LAYOUT else { panic!() };
/// assert_eq!((*name, *size), ("Telemetry", 40));
/// assert_eq!((fields[1].name, fields[1].offset), ("temps", 8));
/// assert!(matches!(fields[1].layout, TypeLayout::Array { len: 8, .. }));
/// assert_eq!(Telemetry::LAYOUT.fingerprint(), Telemetry::FINGERPRINT);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeLayout {
    /// An integer or float.
    Primitive {
        /// Which one.
        kind: Primitive,
        /// Its size in bytes (for `usize`/`isize`, the target's width).
        size: usize,
        /// Its alignment in bytes.
        align: usize,
    },
    /// `[element; len]`.
    Array {
        /// The element's layout.
        element: &'static TypeLayout,
        /// The number of elements.
        len: usize,
        /// The array's size in bytes.
        size: usize,
        /// The array's alignment in bytes.
        align: usize,
    },
    /// A `#[repr(C)]` or `#[repr(transparent)]` struct.
    Struct {
        /// Its name, without the module path.
        name: &'static str,
        /// Its size in bytes.
        size: usize,
        /// Its alignment in bytes.
        align: usize,
        /// Its fields, in declaration order.
        fields: &'static [FieldLayout],
    },
}

/// A field of a [`TypeLayout::Struct`].
///
/// # Examples
///
/// ```
/// use typed_shm::{FieldLayout, ShmSafe};
/// let f = FieldLayout { name: "seq", offset: 0, layout: u64::LAYOUT };
/// assert_eq!(f.layout.size(), 8);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldLayout {
    /// The field's name (`"0"`, `"1"`, … in a tuple struct).
    pub name: &'static str,
    /// Its byte offset in the struct.
    pub offset: usize,
    /// Its type's layout.
    pub layout: &'static TypeLayout,
}

impl TypeLayout {
    /// The layout of the primitive `kind` with the given size and
    /// alignment.
    #[doc(hidden)]
    pub const fn primitive(kind: Primitive, size: usize, align: usize) -> TypeLayout {
        TypeLayout::Primitive { kind, size, align }
    }

    /// Size in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::ShmSafe;
    /// assert_eq!(<[u16; 3]>::LAYOUT.size(), 6);
    /// ```
    pub const fn size(&self) -> usize {
        match *self {
            TypeLayout::Primitive { size, .. }
            | TypeLayout::Array { size, .. }
            | TypeLayout::Struct { size, .. } => size,
        }
    }

    /// Alignment in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::ShmSafe;
    /// assert_eq!(<[u16; 3]>::LAYOUT.align(), 2);
    /// ```
    pub const fn align(&self) -> usize {
        match *self {
            TypeLayout::Primitive { align, .. }
            | TypeLayout::Array { align, .. }
            | TypeLayout::Struct { align, .. } => align,
        }
    }

    /// The fingerprint of this layout, computed as
    /// [`ShmSafe::FINGERPRINT`](crate::ShmSafe::FINGERPRINT) is: equal to it
    /// for every type of this crate and every derived type.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::ShmSafe;
    /// assert_eq!(<[[i8; 2]; 5]>::LAYOUT.fingerprint(), <[[i8; 2]; 5]>::FINGERPRINT);
    /// ```
    pub const fn fingerprint(&self) -> u64 {
        match *self {
            TypeLayout::Primitive { kind, size, align } => {
                FingerprintBuilder::new(kind.name(), size, align).finish()
            }
            TypeLayout::Array {
                element,
                len,
                size,
                align,
            } => FingerprintBuilder::array(element.fingerprint(), len, size, align),
            TypeLayout::Struct {
                name,
                size,
                align,
                fields,
            } => {
                let mut b = FingerprintBuilder::new(name, size, align);
                let mut i = 0;
                while i < fields.len() {
                    b = b.field(fields[i].name, fields[i].offset, fields[i].layout.fingerprint());
                    i += 1;
                }
                b.finish()
            }
        }
    }

    /// The encoding described in the [`crate::inspect`] docs.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::ShmSafe;
    /// assert_eq!(u8::LAYOUT.encode(), [1, 1, 1, 0, 0, 0, 1, 0, 0, 0]);
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(self, &mut out);
        out
    }
}

fn encode_into(t: &TypeLayout, out: &mut Vec<u8>) {
    let name = |out: &mut Vec<u8>, s: &str| {
        // Names longer than u16::MAX are cut (on a character boundary); no
        // Rust identifier is that long.
        let mut end = s.len().min(usize::from(u16::MAX));
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        out.extend_from_slice(&(end as u16).to_le_bytes());
        out.extend_from_slice(&s.as_bytes()[..end]);
    };
    match *t {
        TypeLayout::Primitive { kind, size, align } => {
            out.push(1);
            out.push(kind.code());
            out.extend_from_slice(&(size as u32).to_le_bytes());
            out.extend_from_slice(&(align as u32).to_le_bytes());
        }
        TypeLayout::Array {
            element,
            len,
            size,
            align,
        } => {
            out.push(2);
            out.extend_from_slice(&(len as u64).to_le_bytes());
            out.extend_from_slice(&(size as u64).to_le_bytes());
            out.extend_from_slice(&(align as u32).to_le_bytes());
            encode_into(element, out);
        }
        TypeLayout::Struct {
            name: n,
            size,
            align,
            fields,
        } => {
            out.push(3);
            name(out, n);
            out.extend_from_slice(&(size as u64).to_le_bytes());
            out.extend_from_slice(&(align as u32).to_le_bytes());
            out.extend_from_slice(&(fields.len() as u32).to_le_bytes());
            for f in fields {
                name(out, f.name);
                out.extend_from_slice(&(f.offset as u64).to_le_bytes());
                encode_into(f.layout, out);
            }
        }
    }
}

/// A layout read back from a segment: the owned form of [`TypeLayout`].
///
/// # Examples
///
/// ```
/// use typed_shm::{ShmSafe, inspect::Layout};
/// let layout = Layout::from(<[f32; 8]>::LAYOUT);
/// assert_eq!(layout.to_string(), "[f32; 8]");
/// assert_eq!(typed_shm::inspect::decode(&<[f32; 8]>::LAYOUT.encode()), Ok(layout));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// An integer or float.
    Primitive {
        /// Which one.
        kind: Primitive,
        /// Its size in bytes.
        size: usize,
        /// Its alignment in bytes.
        align: usize,
    },
    /// An array.
    Array {
        /// The element's layout.
        element: Box<Layout>,
        /// The number of elements.
        len: usize,
        /// The array's size in bytes.
        size: usize,
        /// The array's alignment in bytes.
        align: usize,
    },
    /// A struct.
    Struct {
        /// Its name.
        name: String,
        /// Its size in bytes.
        size: usize,
        /// Its alignment in bytes.
        align: usize,
        /// Its fields, in declaration order.
        fields: Vec<Field>,
    },
}

/// A field of a [`Layout::Struct`].
///
/// # Examples
///
/// ```
/// use typed_shm::{ShmSafe, inspect::{Field, Layout}};
/// let f = Field { name: "n".into(), offset: 0, layout: Layout::from(u32::LAYOUT) };
/// assert_eq!(f.layout.size(), 4);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// Its byte offset in the struct.
    pub offset: usize,
    /// Its type's layout.
    pub layout: Layout,
}

impl From<&TypeLayout> for Layout {
    fn from(t: &TypeLayout) -> Layout {
        match *t {
            TypeLayout::Primitive { kind, size, align } => Layout::Primitive { kind, size, align },
            TypeLayout::Array {
                element,
                len,
                size,
                align,
            } => Layout::Array {
                element: Box::new(Layout::from(element)),
                len,
                size,
                align,
            },
            TypeLayout::Struct {
                name,
                size,
                align,
                fields,
            } => Layout::Struct {
                name: name.to_owned(),
                size,
                align,
                fields: fields
                    .iter()
                    .map(|f| Field {
                        name: f.name.to_owned(),
                        offset: f.offset,
                        layout: Layout::from(f.layout),
                    })
                    .collect(),
            },
        }
    }
}

impl Layout {
    /// Size in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{ShmSafe, inspect::Layout};
    /// assert_eq!(Layout::from(u16::LAYOUT).size(), 2);
    /// ```
    pub fn size(&self) -> usize {
        match self {
            Layout::Primitive { size, .. } | Layout::Array { size, .. } | Layout::Struct { size, .. } => {
                *size
            }
        }
    }

    /// Alignment in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{ShmSafe, inspect::Layout};
    /// assert_eq!(Layout::from(u16::LAYOUT).align(), 2);
    /// ```
    pub fn align(&self) -> usize {
        match self {
            Layout::Primitive { align, .. } | Layout::Array { align, .. } | Layout::Struct { align, .. } => {
                *align
            }
        }
    }

    /// The fingerprint this layout stands for (the same value as
    /// [`TypeLayout::fingerprint`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use typed_shm::{ShmSafe, inspect::Layout};
    /// assert_eq!(Layout::from(i32::LAYOUT).fingerprint(), i32::FINGERPRINT);
    /// ```
    pub fn fingerprint(&self) -> u64 {
        match self {
            Layout::Primitive { kind, size, align } => {
                FingerprintBuilder::new(kind.name(), *size, *align).finish()
            }
            Layout::Array {
                element,
                len,
                size,
                align,
            } => FingerprintBuilder::array(element.fingerprint(), *len, *size, *align),
            Layout::Struct {
                name,
                size,
                align,
                fields,
            } => fields
                .iter()
                .fold(FingerprintBuilder::new(name, *size, *align), |b, f| {
                    b.field(&f.name, f.offset, f.layout.fingerprint())
                })
                .finish(),
        }
    }
}

/// Like [`ShmSafe::write_layout`](crate::ShmSafe::write_layout): a struct
/// shows its fields with their types and offsets, one level deep.
impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layout::Struct { name, fields, .. } => {
                write!(f, "{name} {{")?;
                for (i, field) in fields.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{}: ", field.name)?;
                    field.layout.fmt_name(f)?;
                    write!(f, " @{}", field.offset)?;
                }
                f.write_str(" }")
            }
            other => other.fmt_name(f),
        }
    }
}

impl Layout {
    fn fmt_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layout::Primitive { kind, .. } => f.write_str(kind.name()),
            Layout::Array { element, len, .. } => {
                f.write_str("[")?;
                element.fmt_name(f)?;
                write!(f, "; {len}]")
            }
            Layout::Struct { name, .. } => f.write_str(name),
        }
    }
}

/// Why stored layout bytes were refused by [`decode`].
///
/// # Examples
///
/// ```
/// use typed_shm::inspect::{DecodeError, decode};
/// assert_eq!(decode(&[]), Err(DecodeError::Truncated));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes end in the middle of a node.
    Truncated,
    /// Bytes are left after the layout.
    TrailingBytes,
    /// A node tag or primitive kind that does not exist.
    UnknownTag(u8),
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A name that is not UTF-8.
    BadName,
    /// Sizes, alignments or offsets that do not fit together.
    Inconsistent(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("the layout bytes end in the middle of a node"),
            DecodeError::TrailingBytes => f.write_str("bytes are left after the layout"),
            DecodeError::UnknownTag(t) => write!(f, "unknown layout tag or kind {t}"),
            DecodeError::TooDeep => write!(f, "the layout nests deeper than {MAX_DEPTH} levels"),
            DecodeError::BadName => f.write_str("a name in the layout is not UTF-8"),
            DecodeError::Inconsistent(what) => write!(f, "the layout is inconsistent: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<usize, DecodeError> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4)?);
        usize::try_from(u32::from_le_bytes(a)).map_err(|_| DecodeError::Inconsistent("a size beyond usize"))
    }

    fn u64(&mut self) -> Result<usize, DecodeError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        usize::try_from(u64::from_le_bytes(a)).map_err(|_| DecodeError::Inconsistent("a size beyond usize"))
    }

    fn name(&mut self) -> Result<String, DecodeError> {
        let n = usize::from(self.u16()?);
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::BadName)
    }

    fn node(&mut self, depth: usize) -> Result<Layout, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let bad = DecodeError::Inconsistent;
        let align_ok = |a: usize| a.is_power_of_two();
        match self.u8()? {
            1 => {
                let code = self.u8()?;
                let kind = Primitive::from_code(code).ok_or(DecodeError::UnknownTag(code))?;
                let (size, align) = (self.u32()?, self.u32()?);
                let size_ok = match kind.fixed_size() {
                    Some(s) => s == size,
                    None => matches!(size, 2 | 4 | 8),
                };
                if !size_ok || !align_ok(align) || align > size {
                    return Err(bad("a primitive's size or alignment does not fit its kind"));
                }
                Ok(Layout::Primitive { kind, size, align })
            }
            2 => {
                let (len, size, align) = (self.u64()?, self.u64()?, self.u32()?);
                let element = self.node(depth + 1)?;
                if element.size().checked_mul(len) != Some(size) || align != element.align() {
                    return Err(bad(
                        "an array's size or alignment is not its element's times its length",
                    ));
                }
                Ok(Layout::Array {
                    element: Box::new(element),
                    len,
                    size,
                    align,
                })
            }
            3 => {
                let name = self.name()?;
                let (size, align, count) = (self.u64()?, self.u32()?, self.u32()?);
                if !align_ok(align) {
                    return Err(bad("a struct's alignment is not a power of two"));
                }
                // Each field takes at least 2 + 8 + 10 bytes: a count the
                // bytes cannot hold is refused before anything is allocated.
                if count > self.bytes.len() / 20 {
                    return Err(DecodeError::Truncated);
                }
                let mut fields = Vec::with_capacity(count);
                for _ in 0..count {
                    let name = self.name()?;
                    let offset = self.u64()?;
                    let layout = self.node(depth + 1)?;
                    if offset.checked_add(layout.size()).is_none_or(|end| end > size) {
                        return Err(bad("a field lies outside its struct"));
                    }
                    fields.push(Field { name, offset, layout });
                }
                Ok(Layout::Struct {
                    name,
                    size,
                    align,
                    fields,
                })
            }
            t => Err(DecodeError::UnknownTag(t)),
        }
    }
}

/// Decodes layout bytes (the encoding in the [`crate::inspect`] docs). Pure:
/// it trusts nothing in `bytes`, allocates only for what they hold, and
/// never panics.
///
/// # Errors
///
/// A [`DecodeError`] that says what is wrong.
///
/// # Examples
///
/// ```
/// use typed_shm::{ShmSafe, inspect};
/// let layout = inspect::decode(&<[u64; 2]>::LAYOUT.encode())?;
/// assert_eq!(layout.size(), 16);
/// assert!(inspect::decode(&[9]).is_err());
/// # Ok::<(), inspect::DecodeError>(())
/// ```
pub fn decode(bytes: &[u8]) -> Result<Layout, DecodeError> {
    let mut r = Reader { bytes };
    let layout = r.node(0)?;
    if !r.bytes.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShmSafe;
    use proptest::prelude::*;

    #[test]
    fn primitives_and_arrays_round_trip_and_match_their_fingerprints() {
        fn check<T: ShmSafe>() {
            let l = T::LAYOUT;
            assert_eq!(l.fingerprint(), T::FINGERPRINT);
            assert_eq!(l.size(), size_of::<T>());
            assert_eq!(l.align(), align_of::<T>());
            let back = decode(&l.encode()).unwrap();
            assert_eq!(back, Layout::from(l));
            assert_eq!(back.fingerprint(), T::FINGERPRINT);
        }
        check::<u8>();
        check::<i16>();
        check::<u128>();
        check::<usize>();
        check::<isize>();
        check::<f32>();
        check::<f64>();
        check::<[f32; 8]>();
        check::<[[u16; 3]; 2]>();
        check::<[u8; 0]>();
    }

    #[test]
    fn primitive_codes_round_trip() {
        for p in PRIMITIVES {
            assert_eq!(Primitive::from_code(p.code()), Some(p));
        }
        assert_eq!(Primitive::from_code(0), None);
        assert_eq!(Primitive::from_code(15), None);
    }

    #[test]
    fn golden_encoding() {
        static FIELDS: [FieldLayout; 2] = [
            FieldLayout {
                name: "a",
                offset: 0,
                layout: u32::LAYOUT,
            },
            FieldLayout {
                name: "b",
                offset: 4,
                layout: <[u8; 4]>::LAYOUT,
            },
        ];
        let s = TypeLayout::Struct {
            name: "S",
            size: 8,
            align: 4,
            fields: &FIELDS,
        };
        let want: Vec<u8> = [
            &[3, 1, 0, b'S'][..],
            &8u64.to_le_bytes(),
            &4u32.to_le_bytes(),
            &2u32.to_le_bytes(),
            &[1, 0, b'a'],
            &0u64.to_le_bytes(),
            &[1, 3, 4, 0, 0, 0, 4, 0, 0, 0],
            &[1, 0, b'b'],
            &4u64.to_le_bytes(),
            &[2],
            &4u64.to_le_bytes(),
            &4u64.to_le_bytes(),
            &1u32.to_le_bytes(),
            &[1, 1, 1, 0, 0, 0, 1, 0, 0, 0],
        ]
        .concat();
        assert_eq!(s.encode(), want);
        let back = decode(&want).unwrap();
        assert_eq!(back.to_string(), "S { a: u32 @0, b: [u8; 4] @4 }");
        assert_eq!(back.fingerprint(), s.fingerprint());
    }

    #[test]
    fn defects_are_refused() {
        let good = <[u32; 2]>::LAYOUT.encode();
        assert_eq!(decode(&good[..good.len() - 1]), Err(DecodeError::Truncated));
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::TrailingBytes));
        assert_eq!(decode(&[7]), Err(DecodeError::UnknownTag(7)));
        let mut wrong_size = good.clone();
        wrong_size[9] = 9; // the array's size
        assert!(matches!(decode(&wrong_size), Err(DecodeError::Inconsistent(_))));
        let mut wrong_kind = u32::LAYOUT.encode();
        wrong_kind[1] = Primitive::U64.code();
        assert!(matches!(decode(&wrong_kind), Err(DecodeError::Inconsistent(_))));
        // A deep nest of one-element arrays.
        let mut deep = Vec::new();
        for _ in 0..=MAX_DEPTH {
            deep.push(2);
            deep.extend_from_slice(&1u64.to_le_bytes());
            deep.extend_from_slice(&1u64.to_le_bytes());
            deep.extend_from_slice(&1u32.to_le_bytes());
        }
        deep.extend_from_slice(&u8::LAYOUT.encode());
        assert_eq!(decode(&deep), Err(DecodeError::TooDeep));
        // A struct that claims more fields than its bytes can hold.
        let mut many = vec![3, 0, 0];
        many.extend_from_slice(&8u64.to_le_bytes());
        many.extend_from_slice(&8u32.to_le_bytes());
        many.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&many), Err(DecodeError::Truncated));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_encodings_never_panic(at in 0usize..200, byte in any::<u8>(), cut in 0usize..200) {
            let mut b = <[[u16; 3]; 2]>::LAYOUT.encode();
            let n = b.len();
            b[at % n] = byte;
            b.truncate(n - cut % n);
            if let Ok(l) = decode(&b) {
                let _ = (l.fingerprint(), l.to_string());
            }
        }
    }
}
