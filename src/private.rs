//! Items used by the code that `#[derive(ShmSafe)]` generates. Not public API:
//! names here may change in any release.
//!
//! The generated code reaches everything through this module (and `::core`),
//! so a user's crate needs no dependency besides `typed-shm`.

pub use crate::fingerprint::FingerprintBuilder;
pub use crate::layout::{FieldLayout, TypeLayout};
pub use crate::shm_safe::ShmSafe;
pub use bytemuck;
pub use std::string::String;

/// The check the derive puts on every field type, so that the compiler error
/// lands on the field and says what to do.
///
/// It has a blanket impl for every [`ShmSafe`] type; the generated code
/// reaches field types only through this bound, so a field that is not
/// `ShmSafe` is reported once, with this message. `ShmSafe` is its
/// supertrait, so that no other impl can let a type through without the
/// `unsafe impl ShmSafe` that vouches for it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a field of a `ShmSafe` struct: it is not `ShmSafe`",
    label = "not `ShmSafe`: this field cannot live in shared memory",
    note = "pointers and references mean nothing in another process, and `bool`, `char`, enums, `Option` and `NonZero*` have bit patterns that are not valid values; `String`, `Vec` and `Box` point to the heap",
    note = "use integers (`u8` for a flag, `u32` for a `char`), `f32`/`f64`, fixed-size arrays `[T; N]`, or another struct with `#[derive(ShmSafe)]`"
)]
pub trait ShmSafeField: ShmSafe {}

impl<T: ShmSafe> ShmSafeField for T {}

/// Everything the generated code needs to know about one field.
///
/// The derive builds one table of these per struct, in a `const`, with
/// [`field`]: each field type then meets the [`ShmSafeField`] bound exactly
/// once, and the fingerprint, the layout description and the padding check
/// all read the same table.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    name: &'static str,
    offset: usize,
    size: usize,
    fingerprint: u64,
    layout: &'static TypeLayout,
    write_type_name: fn(&mut String),
}

/// The [`Field`] called `name`, of type `T`, at byte `offset`.
pub const fn field<T: ShmSafeField>(name: &'static str, offset: usize) -> Field {
    Field {
        name,
        offset,
        size: core::mem::size_of::<T>(),
        fingerprint: T::FINGERPRINT,
        layout: T::LAYOUT,
        write_type_name: T::write_type_name,
    }
}

/// The fields of a struct's [`TypeLayout`], from the same table as its
/// fingerprint.
pub const fn layout_fields<const N: usize>(fields: &[Field; N]) -> [FieldLayout; N] {
    let mut out = [FieldLayout {
        name: "",
        offset: 0,
        layout: <u8 as ShmSafe>::LAYOUT,
    }; N];
    let mut i = 0;
    while i < N {
        out[i] = FieldLayout {
            name: fields[i].name,
            offset: fields[i].offset,
            layout: fields[i].layout,
        };
        i += 1;
    }
    out
}

/// The fingerprint of the struct `name` from its size, alignment and fields,
/// in declaration order.
pub const fn fingerprint(name: &str, size: usize, align: usize, fields: &[Field]) -> u64 {
    let mut b = FingerprintBuilder::new(name, size, align);
    let mut i = 0;
    while i < fields.len() {
        b = b.field(fields[i].name, fields[i].offset, fields[i].fingerprint);
        i += 1;
    }
    b.finish()
}

/// Writes `Name { field: type @offset, … }` for `ShmSafe::write_layout`.
pub fn write_layout(out: &mut String, name: &str, fields: &[Field]) {
    use core::fmt::Write as _;
    out.push_str(name);
    out.push_str(" {");
    for (i, f) in fields.iter().enumerate() {
        out.push_str(if i == 0 { " " } else { ", " });
        out.push_str(f.name);
        out.push_str(": ");
        (f.write_type_name)(out);
        let _ = write!(out, " @{}", f.offset);
    }
    out.push_str(" }");
}

/// Fails to compile, with a message that says what to do, unless `T` is
/// `Copy`, which `bytemuck::Pod` requires.
pub const fn assert_copy<T: DeriveCopy>() {}

/// The bound of the derive's `Pod` and `ShmSafe` impls (see
/// [`assert_copy`]), so that a struct without `Copy` gets one error that says
/// what to add, instead of errors about `bytemuck::Pod`'s supertraits.
///
/// `Copy` is its supertrait: inside the impls, the bound implies the `Copy`
/// that `Pod` requires.
#[diagnostic::on_unimplemented(
    message = "`{Self}` must be `Copy` to derive `ShmSafe`",
    label = "`{Self}` is not `Copy`",
    note = "add `#[derive(Clone, Copy)]` to `{Self}`, next to `#[derive(ShmSafe)]`"
)]
pub trait DeriveCopy: Copy {}

impl<T: Copy> DeriveCopy for T {}

/// Fails to compile, with a message that says what to do, unless `T`
/// implements `bytemuck::Pod`: what `#[shm_safe(external_pod)]` promises.
pub const fn assert_external_pod<T: ExternalPod>() {}

/// The bound of the derive's `ShmSafe` impl under `external_pod` (see
/// [`assert_external_pod`]). `Pod` is its supertrait, so inside the impl the
/// bound implies the `ShmSafe: Pod` requirement.
#[diagnostic::on_unimplemented(
    message = "`#[shm_safe(external_pod)]` says `{Self}` implements `bytemuck::Pod`, but it does not",
    label = "no `bytemuck::Pod` impl",
    note = "add `#[derive(bytemuck::Pod, bytemuck::Zeroable)]`, or remove `external_pod` to let `#[derive(ShmSafe)]` implement both"
)]
pub trait ExternalPod: bytemuck::Pod {}

impl<T: bytemuck::Pod> ExternalPod for T {}

/// Room for the longest message [`LayoutCheck`] writes; longer messages end
/// with `…`.
const MESSAGE_CAP: usize = 512;

/// The result of checking a struct's layout in a `const` context: empty when
/// the layout is fine, otherwise a message that says what is wrong and how to
/// fix it (`panic!` in a `const` can only print a `&str`, so the message is
/// formatted here by hand).
#[derive(Clone, Copy)]
pub struct LayoutCheck {
    buf: [u8; MESSAGE_CAP],
    len: usize,
    truncated: bool,
}

impl LayoutCheck {
    /// Checks that the struct `name`, `size` bytes long, is not zero-sized
    /// and has no padding: `fields`, in declaration order (which
    /// `#[repr(C)]` keeps), must cover every byte exactly once.
    pub const fn new(name: &str, size: usize, fields: &[Field]) -> Self {
        let mut check = LayoutCheck {
            buf: [0; MESSAGE_CAP],
            len: 0,
            truncated: false,
        };
        if size == 0 {
            return check.text("`").text(name).text(
                "` is zero-sized: a shared memory segment needs at least one byte of data; add a field",
            );
        }
        let mut covered = 0;
        let mut i = 0;
        while i < fields.len() {
            covered += fields[i].size;
            i += 1;
        }
        if covered >= size {
            return check;
        }
        check = check
            .text("`")
            .text(name)
            .text("` has ")
            .bytes(size - covered)
            .text(" of padding, and `ShmSafe` types must have none (padding bytes are uninitialized and differ between programs): add ");
        // Walk the fields in order and name every gap.
        let mut end = 0;
        let mut gaps = 0;
        let mut i = 0;
        while i <= fields.len() {
            let (next, at_end) = if i < fields.len() {
                (fields[i].offset, false)
            } else {
                (size, true)
            };
            if next > end {
                if gaps > 0 {
                    check = check.text(", ");
                }
                check = check
                    .text("`_pad")
                    .num(gaps)
                    .text(": [u8; ")
                    .num(next - end)
                    .text("]`");
                check = if at_end {
                    check.text(" at the end")
                } else if i == 0 {
                    check.text(" before `").text(fields[i].name).text("`")
                } else {
                    check.text(" after `").text(fields[i - 1].name).text("`")
                };
                check = check.text(" (offset ").num(end).text(")");
                gaps += 1;
            }
            if i < fields.len() {
                let field_end = fields[i].offset + fields[i].size;
                if field_end > end {
                    end = field_end;
                }
            }
            i += 1;
        }
        check
    }

    /// The error message, or `None` if the layout is fine.
    pub const fn error(&self) -> Option<&str> {
        if self.len == 0 {
            return None;
        }
        let (bytes, _) = self.buf.split_at(self.len);
        match core::str::from_utf8(bytes) {
            Ok(s) => Some(s),
            // Unreachable: only whole UTF-8 sequences are copied in.
            Err(_) => Some("the struct has padding or is zero-sized"),
        }
    }

    const fn text(mut self, s: &str) -> Self {
        let bytes = s.as_bytes();
        // Keep room for the ellipsis, and cut only between characters.
        const ELLIPSIS: &[u8] = "…".as_bytes();
        if self.truncated {
            return self;
        }
        if self.len + bytes.len() + ELLIPSIS.len() > MESSAGE_CAP {
            let mut i = 0;
            while i < ELLIPSIS.len() {
                self.buf[self.len] = ELLIPSIS[i];
                self.len += 1;
                i += 1;
            }
            self.truncated = true;
            return self;
        }
        let mut i = 0;
        while i < bytes.len() {
            self.buf[self.len] = bytes[i];
            self.len += 1;
            i += 1;
        }
        self
    }

    const fn num(self, mut n: usize) -> Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let (_, used) = digits.split_at(start);
        match core::str::from_utf8(used) {
            Ok(s) => self.text(s),
            Err(_) => self,
        }
    }

    const fn bytes(self, n: usize) -> Self {
        let s = self.num(n);
        if n == 1 { s.text(" byte") } else { s.text(" bytes") }
    }
}

#[cfg(test)]
mod tests {
    use super::{Field, LayoutCheck, String, field, write_layout};

    /// A field of `size` bytes (any `ShmSafe` type of that size will do).
    fn sized(name: &'static str, offset: usize, size: usize) -> Field {
        match size {
            0 => field::<[u8; 0]>(name, offset),
            1 => field::<u8>(name, offset),
            2 => field::<u16>(name, offset),
            4 => field::<u32>(name, offset),
            _ => field::<u64>(name, offset),
        }
    }

    fn message(name: &str, size: usize, fields: &[Field]) -> Option<String> {
        LayoutCheck::new(name, size, fields).error().map(String::from)
    }

    #[test]
    fn a_packed_layout_passes() {
        let fields = [sized("a", 0, 4), sized("b", 4, 4)];
        assert_eq!(message("S", 8, &fields), None);
    }

    #[test]
    fn padding_is_counted_and_located() {
        // struct S { a: u8, b: u32, c: u16 } under repr(C): 1 + 3 + 4 + 2 + 2.
        let fields = [sized("a", 0, 1), sized("b", 4, 4), sized("c", 8, 2)];
        assert_eq!(
            message("S", 12, &fields).as_deref(),
            Some(
                "`S` has 5 bytes of padding, and `ShmSafe` types must have none (padding bytes \
                 are uninitialized and differ between programs): add `_pad0: [u8; 3]` after \
                 `a` (offset 1), `_pad1: [u8; 2]` at the end (offset 10)"
            )
        );
    }

    #[test]
    fn one_byte_is_singular() {
        let fields = [sized("a", 0, 1)];
        let msg = message("S", 2, &fields).unwrap_or_default();
        assert!(msg.starts_with("`S` has 1 byte of padding"), "{msg}");
        assert!(msg.ends_with("`_pad0: [u8; 1]` at the end (offset 1)"), "{msg}");
    }

    #[test]
    fn zero_sized_is_refused() {
        let msg = message("Z", 0, &[sized("a", 0, 0)]).unwrap_or_default();
        assert!(msg.contains("`Z` is zero-sized"), "{msg}");
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let name = "é".repeat(300);
        let msg = message(&name, 8, &[sized("a", 0, 1)]).unwrap_or_default();
        assert!(msg.ends_with('…'), "{msg}");
        assert!(msg.len() <= super::MESSAGE_CAP);
    }

    #[test]
    fn layout_lists_fields_with_offsets() {
        let mut s = String::new();
        write_layout(
            &mut s,
            "T",
            &[field::<u64>("seq", 0), field::<[f32; 8]>("temps", 8)],
        );
        assert_eq!(s, "T { seq: u64 @0, temps: [f32; 8] @8 }");
    }
}
