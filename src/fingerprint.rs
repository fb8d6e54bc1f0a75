//! The layout fingerprint: a `const` 64-bit digest of a type's layout.
//!
//! The fingerprint is part of the segment format: two programs compiled
//! separately (even by different compiler versions) must compute the same value
//! for the same definition, so it is built only from names, sizes, alignments
//! and offsets — never from `TypeId` or a std hasher.
//!
//! # Encoding (format v1)
//!
//! The digest is 64-bit FNV-1a over a byte stream, followed by the
//! `splitmix64` finalizer. Every integer is fed as 8 little-endian bytes,
//! every string as its length (as an integer) followed by its UTF-8 bytes:
//!
//! | call | bytes fed |
//! |---|---|
//! | [`FingerprintBuilder::new`]`(name, size, align)` | `b'T'`, name, size, align |
//! | [`.field`](FingerprintBuilder::field)`(name, offset, fp)` | `b'F'`, name, offset, fp |
//! | [`.finish`](FingerprintBuilder::finish)`()` | `b'E'`, number of fields |
//!
//! Primitives are `new(name, size, align).finish()` with their Rust name
//! (`"u32"`, `"f64"`, `"usize"`, …). An array `[E; N]` is
//! [`FingerprintBuilder::array`]`(E::FINGERPRINT, N, size, align)`, which
//! is `new("[]", size, align).field("", N, E::FINGERPRINT).finish()`.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Builds a layout fingerprint in a `const` context.
///
/// `#[derive(ShmSafe)]` calls this for you; use it by hand only for a type whose
/// `ShmSafe` impl you write yourself.
///
/// # Examples
///
/// ```
/// use typed_shm::FingerprintBuilder;
///
/// #[repr(C)]
/// struct Point { x: u32, y: u32 }
///
/// const FP: u64 = FingerprintBuilder::new("Point", 8, 4)
///     .field("x", 0, <u32 as typed_shm::ShmSafe>::FINGERPRINT)
///     .field("y", 4, <u32 as typed_shm::ShmSafe>::FINGERPRINT)
///     .finish();
/// // Renaming a field gives another fingerprint.
/// const OTHER: u64 = FingerprintBuilder::new("Point", 8, 4)
///     .field("x", 0, <u32 as typed_shm::ShmSafe>::FINGERPRINT)
///     .field("z", 4, <u32 as typed_shm::ShmSafe>::FINGERPRINT)
///     .finish();
/// assert_ne!(FP, OTHER);
/// ```
#[derive(Clone, Copy, Debug)]
#[must_use = "call .finish() to get the fingerprint"]
pub struct FingerprintBuilder {
    state: u64,
    fields: u64,
}

impl FingerprintBuilder {
    /// Starts the fingerprint of a type called `name` with the given size and
    /// alignment in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// let fp = typed_shm::FingerprintBuilder::new("u32", 4, 4).finish();
    /// assert_eq!(fp, <u32 as typed_shm::ShmSafe>::FINGERPRINT);
    /// ```
    pub const fn new(name: &str, size: usize, align: usize) -> Self {
        let b = FingerprintBuilder {
            state: FNV_OFFSET,
            fields: 0,
        };
        b.byte(b'T').str(name).int(size as u64).int(align as u64)
    }

    /// Adds a field: its name, its byte offset in the type and its own
    /// fingerprint.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::{FingerprintBuilder, ShmSafe};
    /// let a = FingerprintBuilder::new("S", 8, 8).field("n", 0, u64::FINGERPRINT).finish();
    /// let b = FingerprintBuilder::new("S", 8, 8).field("n", 0, i64::FINGERPRINT).finish();
    /// assert_ne!(a, b);
    /// ```
    pub const fn field(self, name: &str, offset: usize, fingerprint: u64) -> Self {
        let mut b = self.byte(b'F').str(name).int(offset as u64).int(fingerprint);
        b.fields += 1;
        b
    }

    /// The fingerprint of the array type `[E; len]`, given `E`'s fingerprint and
    /// the array's size and alignment.
    ///
    /// # Examples
    ///
    /// ```
    /// use typed_shm::{FingerprintBuilder, ShmSafe};
    /// assert_eq!(
    ///     <[f32; 8]>::FINGERPRINT,
    ///     FingerprintBuilder::array(f32::FINGERPRINT, 8, 32, 4),
    /// );
    /// ```
    pub const fn array(element: u64, len: usize, size: usize, align: usize) -> u64 {
        Self::new("[]", size, align).field("", len, element).finish()
    }

    /// Ends the type and returns its fingerprint.
    ///
    /// # Examples
    ///
    /// ```
    /// let fp = typed_shm::FingerprintBuilder::new("Empty", 0, 1).finish();
    /// assert_ne!(fp, 0);
    /// ```
    pub const fn finish(self) -> u64 {
        let fields = self.fields;
        let b = self.byte(b'E').int(fields);
        // splitmix64 finalizer: spreads FNV's weak high bits.
        let mut z = b.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    const fn byte(mut self, b: u8) -> Self {
        self.state = (self.state ^ b as u64).wrapping_mul(FNV_PRIME);
        self
    }

    const fn int(self, v: u64) -> Self {
        let bytes = v.to_le_bytes();
        let mut b = self;
        let mut i = 0;
        while i < bytes.len() {
            b = b.byte(bytes[i]);
            i += 1;
        }
        b
    }

    const fn str(self, s: &str) -> Self {
        let bytes = s.as_bytes();
        let mut b = self.int(bytes.len() as u64);
        let mut i = 0;
        while i < bytes.len() {
            b = b.byte(bytes[i]);
            i += 1;
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::FingerprintBuilder;
    use crate::ShmSafe;

    // Golden values: the fingerprint is a wire format. If one of these changes,
    // segments written by older builds can no longer be attached: bump the
    // header format version instead of editing the numbers.
    #[test]
    fn golden_primitive_fingerprints() {
        let got = [
            ("u8", u8::FINGERPRINT),
            ("u16", u16::FINGERPRINT),
            ("u32", u32::FINGERPRINT),
            ("u64", u64::FINGERPRINT),
            ("i32", i32::FINGERPRINT),
            ("f32", f32::FINGERPRINT),
            ("f64", f64::FINGERPRINT),
            ("[f32; 8]", <[f32; 8]>::FINGERPRINT),
        ];
        let want: [(&str, u64); 8] = [
            ("u8", 0xd54b_3289_d857_9b5f),
            ("u16", 0x2c1a_0b93_3c27_fb49),
            ("u32", 0xa3f2_6b77_71b3_0590),
            ("u64", 0x9b2d_e921_368b_2a6d),
            ("i32", 0x41a3_274b_c397_c764),
            ("f32", 0xbeb0_e95a_ede8_5970),
            ("f64", 0x5e0c_db71_ab59_78b4),
            ("[f32; 8]", 0x6fe7_e2f2_ff02_059c),
        ];
        for ((name, g), (_, w)) in got.iter().zip(want.iter()) {
            assert_eq!(g, w, "fingerprint of {name} changed: {g:#018x}");
        }
    }

    #[test]
    fn golden_struct_fingerprint() {
        let fp = FingerprintBuilder::new("Telemetry", 40, 8)
            .field("seq", 0, u64::FINGERPRINT)
            .field("temps", 8, <[f32; 8]>::FINGERPRINT)
            .finish();
        assert_eq!(fp, 0xec71_1289_6a15_78df, "got {fp:#018x}");
    }

    #[test]
    fn every_ingredient_changes_the_fingerprint() {
        let base = || FingerprintBuilder::new("S", 16, 8);
        let a = base().field("a", 0, 1).field("b", 8, 2).finish();
        let variants = [
            FingerprintBuilder::new("T", 16, 8)
                .field("a", 0, 1)
                .field("b", 8, 2)
                .finish(),
            FingerprintBuilder::new("S", 24, 8)
                .field("a", 0, 1)
                .field("b", 8, 2)
                .finish(),
            FingerprintBuilder::new("S", 16, 4)
                .field("a", 0, 1)
                .field("b", 8, 2)
                .finish(),
            base().field("b", 0, 2).field("a", 8, 1).finish(),
            base().field("a", 0, 1).field("c", 8, 2).finish(),
            base().field("a", 0, 1).field("b", 4, 2).finish(),
            base().field("a", 0, 1).field("b", 8, 3).finish(),
            base().field("a", 0, 1).finish(),
            base()
                .field("a", 0, 1)
                .field("b", 8, 2)
                .field("c", 12, 2)
                .finish(),
            // Concatenated names must not collide with split ones.
            base().field("ab", 0, 1).field("", 8, 2).finish(),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(a, *v, "variant {i} collides with the base layout");
        }
    }

    #[test]
    fn width_of_usize_enters_the_fingerprint() {
        let narrow = FingerprintBuilder::new("usize", 4, 4).finish();
        let wide = FingerprintBuilder::new("usize", 8, 8).finish();
        assert_ne!(narrow, wide);
        assert!(usize::FINGERPRINT == narrow || usize::FINGERPRINT == wide);
    }
}
