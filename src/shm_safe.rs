//! The [`ShmSafe`] trait: types that may live in shared memory.
// The trait is `unsafe` and so are its impls for primitives; each impl states
// why the contract holds.
#![allow(unsafe_code)]

use crate::fingerprint::FingerprintBuilder;
use crate::layout::{Primitive, TypeLayout};

/// A type that may live in memory shared between processes.
///
/// A `ShmSafe` type is plain bytes in every sense that matters across a
/// process boundary:
///
/// - every bit pattern is a valid value (it is [`bytemuck::Pod`]), so no other
///   process can write a value that is undefined behaviour to read here;
/// - it has no padding, and its layout is fixed by `#[repr(C)]` or
///   `#[repr(transparent)]`;
/// - it holds no pointers or references: an address means nothing in another
///   process (`bytemuck::Pod` allows raw pointers, `ShmSafe` does not), and no
///   `bool`, `char` or enum, whose invalid bit patterns another process could
///   store;
/// - [`FINGERPRINT`](ShmSafe::FINGERPRINT) is built by [`FingerprintBuilder`]
///   from the type's name, size and alignment and each field's name, offset and
///   fingerprint, so that a segment created for another layout is refused by
///   `attach` with [`ErrorKind::LayoutMismatch`](crate::ErrorKind::LayoutMismatch);
/// - [`LAYOUT`](ShmSafe::LAYOUT) describes the same layout from the same
///   facts (its [`fingerprint`](TypeLayout::fingerprint) equals
///   `FINGERPRINT`); it is stored in every segment so that tools can decode
///   the data without the program's source.
///
/// It is implemented for the integers (`usize` and `isize` included; their
/// width enters the fingerprint), `f32`, `f64`, arrays of `ShmSafe` types, and
/// by `#[derive(ShmSafe)]`.
///
/// # Safety
///
/// An implementor guarantees everything listed above. The derive checks it at
/// compile time; prefer it to a hand-written impl. A hand-written impl must
/// also return a fingerprint that differs whenever the layout differs.
///
/// The derive's `#[shm_safe(crate = "path")]` option (for a renamed or
/// re-exported `typed_shm`) is trusted like an `unsafe` block: the path must
/// name this crate, because the derive's `unsafe impl`s rely on the checks it
/// finds there; a path to a look-alike module can make them unsound.
///
/// # Examples
///
/// ```
/// use typed_shm::ShmSafe;
///
/// fn fingerprint_of<T: ShmSafe>() -> u64 {
///     T::FINGERPRINT
/// }
/// assert_ne!(fingerprint_of::<u32>(), fingerprint_of::<i32>());
/// assert_ne!(fingerprint_of::<[u8; 4]>(), fingerprint_of::<u32>());
/// ```
///
/// Raw pointers are `Pod` but not `ShmSafe`:
///
/// ```compile_fail
/// fn needs<T: typed_shm::ShmSafe>() {}
/// needs::<*const u8>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot live in shared memory: it is not `ShmSafe`",
    label = "not `ShmSafe`",
    note = "share integers, `f32`/`f64`, arrays of them, or a `#[repr(C)]` struct with \
            `#[derive(ShmSafe)]`; store `bool` as `u8` and `char` as `u32`; pointers and references \
            mean nothing in another process"
)]
pub unsafe trait ShmSafe: bytemuck::Pod {
    /// The layout fingerprint, built with [`FingerprintBuilder`].
    const FINGERPRINT: u64;

    /// The machine-readable layout: a `const` tree of named fields with
    /// their offsets, primitive kinds, arrays and nested structs (see
    /// [`TypeLayout`] and, for how it is stored, [`crate::inspect`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::{Primitive, ShmSafe, TypeLayout};
    /// assert_eq!(
    ///     *u16::LAYOUT,
    ///     TypeLayout::Primitive { kind: Primitive::U16, size: 2, align: 2 },
    /// );
    /// ```
    const LAYOUT: &'static TypeLayout;

    /// Writes the type's name as a program would spell it (`u32`, `[f32; 8]`,
    /// `Telemetry`).
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::ShmSafe;
    /// let mut s = String::new();
    /// <[f32; 8]>::write_type_name(&mut s);
    /// assert_eq!(s, "[f32; 8]");
    /// ```
    fn write_type_name(out: &mut String);

    /// Writes a short readable description of the layout; for a struct, its
    /// fields with their types and offsets (`Telemetry { seq: u64 @0, temps:
    /// [f32; 8] @8 }`). For other types it is the type name.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::ShmSafe;
    /// let mut s = String::new();
    /// u64::write_layout(&mut s);
    /// assert_eq!(s, "u64");
    /// ```
    fn write_layout(out: &mut String) {
        Self::write_type_name(out);
    }
}

macro_rules! primitive {
    ($($t:ident $kind:ident)*) => {$(
        // SAFETY: a primitive integer or float has no padding, no invalid bit
        // patterns and no pointers, and its layout is fixed by the language;
        // its fingerprint is built from its name, size and alignment.
        unsafe impl ShmSafe for $t {
            const FINGERPRINT: u64 = FingerprintBuilder::new(
                stringify!($t),
                core::mem::size_of::<$t>(),
                core::mem::align_of::<$t>(),
            )
            .finish();

            const LAYOUT: &'static TypeLayout = &TypeLayout::primitive(
                Primitive::$kind,
                core::mem::size_of::<$t>(),
                core::mem::align_of::<$t>(),
            );

            fn write_type_name(out: &mut String) {
                out.push_str(stringify!($t));
            }
        }
    )*};
}

primitive!(
    u8 U8 u16 U16 u32 U32 u64 U64 u128 U128 usize Usize
    i8 I8 i16 I16 i32 I32 i64 I64 i128 I128 isize Isize f32 F32 f64 F64
);

// SAFETY: an array of `ShmSafe` elements has no padding between elements
// (Rust arrays are laid out contiguously with stride `size_of::<E>()`, which is
// a multiple of the alignment), so it inherits every property of `E`; its
// fingerprint covers the element fingerprint, the length, size and alignment.
unsafe impl<E: ShmSafe, const N: usize> ShmSafe for [E; N] {
    const FINGERPRINT: u64 = FingerprintBuilder::array(
        E::FINGERPRINT,
        N,
        core::mem::size_of::<[E; N]>(),
        core::mem::align_of::<[E; N]>(),
    );

    const LAYOUT: &'static TypeLayout = &TypeLayout::Array {
        element: E::LAYOUT,
        len: N,
        size: core::mem::size_of::<[E; N]>(),
        align: core::mem::align_of::<[E; N]>(),
    };

    fn write_type_name(out: &mut String) {
        use core::fmt::Write as _;
        out.push('[');
        E::write_type_name(out);
        let _ = write!(out, "; {N}]");
    }
}

#[cfg(test)]
mod tests {
    use super::ShmSafe;

    fn name<T: ShmSafe>() -> String {
        let mut s = String::new();
        T::write_type_name(&mut s);
        s
    }

    #[test]
    fn type_names_read_like_rust() {
        assert_eq!(name::<u8>(), "u8");
        assert_eq!(name::<f64>(), "f64");
        assert_eq!(name::<[[u16; 2]; 3]>(), "[[u16; 2]; 3]");
    }

    #[test]
    fn nested_arrays_differ_from_flat_ones() {
        assert_ne!(<[[u8; 2]; 3]>::FINGERPRINT, <[u8; 6]>::FINGERPRINT);
        assert_ne!(<[[u8; 2]; 3]>::FINGERPRINT, <[[u8; 3]; 2]>::FINGERPRINT);
    }
}
