//! `#[derive(ShmSafe)]` on the shapes it accepts: nested structs, arrays of
//! structs, `repr(transparent)`, `repr(C, align(N))`, tuple structs, and
//! composition with bytemuck's own derives.
// The derive must work in a crate that denies unsafe code.
#![deny(unsafe_code)]
// The generated code must not trip lints a strict user crate enables.
#![warn(clippy::pedantic, clippy::nursery, missing_docs)]

use typed_shm::__private::bytemuck;
use typed_shm::ShmSafe;

fn layout<T: ShmSafe>() -> String {
    let mut s = String::new();
    T::write_layout(&mut s);
    s
}

fn type_name<T: ShmSafe>() -> String {
    let mut s = String::new();
    T::write_type_name(&mut s);
    s
}

#[derive(Clone, Copy, Debug, PartialEq, ShmSafe)]
#[repr(C)]
struct Telemetry {
    seq: u64,
    temps: [f32; 8],
}

#[test]
fn the_api_example_compiles_and_is_pod() {
    let t = Telemetry {
        seq: 7,
        temps: [1.5; 8],
    };
    let bytes = bytemuck::bytes_of(&t);
    assert_eq!(bytes.len(), 40);
    let back: Telemetry = bytemuck::pod_read_unaligned(bytes);
    assert_eq!(back, t);
    let zero: Telemetry = bytemuck::Zeroable::zeroed();
    assert_eq!(zero.seq, 0);
}

#[test]
fn layout_description_lists_fields_types_and_offsets() {
    assert_eq!(type_name::<Telemetry>(), "Telemetry");
    assert_eq!(
        layout::<Telemetry>(),
        "Telemetry { seq: u64 @0, temps: [f32; 8] @8 }"
    );
}

#[test]
fn fingerprint_is_the_one_the_library_builds_by_hand() {
    // The derive must feed exactly name, size, alignment and each field's
    // name, offset and fingerprint, in declaration order.
    let by_hand = typed_shm::FingerprintBuilder::new("Telemetry", 40, 8)
        .field("seq", 0, u64::FINGERPRINT)
        .field("temps", 8, <[f32; 8]>::FINGERPRINT)
        .finish();
    assert_eq!(Telemetry::FINGERPRINT, by_hand);
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Point {
    x: i32,
    y: i32,
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Path {
    len: u32,
    origin: Point,
    points: [Point; 4],
    grid: [[u16; 2]; 2],
}

#[test]
fn nested_structs_and_arrays_of_structs() {
    assert_eq!(core::mem::size_of::<Path>(), 4 + 8 + 32 + 8);
    assert_eq!(
        layout::<Path>(),
        "Path { len: u32 @0, origin: Point @4, points: [Point; 4] @12, grid: [[u16; 2]; 2] @44 }"
    );
    // The nested struct's fingerprint enters the outer one.
    let by_hand = typed_shm::FingerprintBuilder::new("Path", 52, 4)
        .field("len", 0, u32::FINGERPRINT)
        .field("origin", 4, Point::FINGERPRINT)
        .field("points", 12, <[Point; 4]>::FINGERPRINT)
        .field("grid", 44, <[[u16; 2]; 2]>::FINGERPRINT)
        .finish();
    assert_eq!(Path::FINGERPRINT, by_hand);
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(transparent)]
struct Celsius(f32);

#[derive(Clone, Copy, ShmSafe)]
#[repr(transparent)]
struct Wrapped {
    inner: Point,
}

#[test]
fn repr_transparent() {
    assert_eq!(layout::<Celsius>(), "Celsius { 0: f32 @0 }");
    assert_eq!(layout::<Wrapped>(), "Wrapped { inner: Point @0 }");
    assert_eq!(core::mem::align_of::<Celsius>(), 4);
    // A wrapper is not its contents: the name enters the fingerprint.
    assert_ne!(Celsius::FINGERPRINT, f32::FINGERPRINT);
}

/// Cache-line aligned: `align(N)` adds trailing padding, which must be
/// spelled out.
#[derive(Clone, Copy, ShmSafe)]
#[repr(C, align(64))]
struct Slot {
    value: u64,
    _pad0: [u8; 56],
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(align(16), C)]
struct Aligned16 {
    a: [u32; 4],
}

#[test]
fn repr_c_align_n() {
    assert_eq!(core::mem::align_of::<Slot>(), 64);
    assert_eq!(core::mem::size_of::<[Slot; 2]>(), 128);
    assert_eq!(layout::<Slot>(), "Slot { value: u64 @0, _pad0: [u8; 56] @8 }");
    assert_eq!(core::mem::align_of::<Aligned16>(), 16);
    // The same fields with another alignment give another fingerprint.
    let natural = typed_shm::FingerprintBuilder::new("Aligned16", 16, 4)
        .field("a", 0, <[u32; 4]>::FINGERPRINT)
        .finish();
    assert_ne!(Aligned16::FINGERPRINT, natural);
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Pair(u32, u32);

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Keywords {
    r#type: u16,
    r#match: u16,
}

#[test]
fn tuple_structs_and_raw_identifiers() {
    assert_eq!(layout::<Pair>(), "Pair { 0: u32 @0, 1: u32 @4 }");
    assert_eq!(layout::<Keywords>(), "Keywords { type: u16 @0, match: u16 @2 }");
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Widths {
    len: usize,
    delta: isize,
    big: u128,
}

#[test]
fn usize_is_allowed_and_its_width_is_in_the_fingerprint() {
    let w = core::mem::size_of::<usize>();
    assert!(layout::<Widths>().starts_with("Widths { len: usize @0, delta: isize @"));
    let by_hand = typed_shm::FingerprintBuilder::new(
        "Widths",
        core::mem::size_of::<Widths>(),
        core::mem::align_of::<Widths>(),
    )
    .field(
        "len",
        0,
        typed_shm::FingerprintBuilder::new("usize", w, w).finish(),
    )
    .field(
        "delta",
        w,
        typed_shm::FingerprintBuilder::new("isize", w, w).finish(),
    )
    .field("big", 2 * w, u128::FINGERPRINT)
    .finish();
    assert_eq!(Widths::FINGERPRINT, by_hand);
}

/// bytemuck's derives provide `Pod` and `Zeroable`; the opt-out keeps the
/// derive from emitting them a second time.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, ShmSafe)]
#[repr(C)]
#[shm_safe(external_pod)]
struct FromBytemuck {
    a: u32,
    b: f32,
}

#[test]
fn composes_with_bytemuck_derives() {
    let v: FromBytemuck = bytemuck::cast([1u32, 0]);
    assert_eq!(v.a, 1);
    assert_eq!(v.b.to_bits(), 0);
    assert_eq!(layout::<FromBytemuck>(), "FromBytemuck { a: u32 @0, b: f32 @4 }");
}

mod renamed {
    // The `crate` option, for a renamed `typed-shm` dependency.
    pub use typed_shm as shm;

    #[derive(Clone, Copy, typed_shm::ShmSafe)]
    #[repr(C)]
    #[shm_safe(crate = "self::shm")]
    pub struct ViaPath {
        pub a: u8,
    }
}

#[test]
fn crate_option_names_the_library_path() {
    assert_eq!(layout::<renamed::ViaPath>(), "ViaPath { a: u8 @0 }");
}

/// Doc comments and other attributes on fields do not disturb the derive.
#[derive(Clone, Copy, Default, ShmSafe)]
#[repr(C)]
pub struct Documented {
    /// A documented field.
    #[allow(dead_code)]
    pub a: u16,
    pub(crate) b: u16,
}

#[test]
fn attributes_and_visibility_on_fields() {
    assert_eq!(layout::<Documented>(), "Documented { a: u16 @0, b: u16 @2 }");
    let d = Documented::default();
    assert_eq!(d.b, 0);
}
