//! The derived fingerprint: every change of layout changes it, and its
//! values are pinned, because the fingerprint is stored in segments and
//! compared by programs built separately (a wire format).

use typed_shm::ShmSafe;

/// Declares `struct S` with the given fields and attributes in a module of
/// its own, so that variants of one struct can sit side by side.
macro_rules! variant {
    ($module:ident $(#[$attr:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[allow(dead_code)]
        mod $module {
            #[derive(Clone, Copy, typed_shm::ShmSafe)]
            $(#[$attr])*
            pub struct $name { $(pub $field: $ty),* }
        }
    };
}

variant!(base #[repr(C)] S { a: u32, b: [u8; 4] });
variant!(same_elsewhere #[repr(C)] S { a: u32, b: [u8; 4] });
variant!(added #[repr(C)] S { a: u32, b: [u8; 4], c: u32 });
variant!(removed #[repr(C)] S { a: u32 });
variant!(renamed #[repr(C)] S { a: u32, c: [u8; 4] });
variant!(reordered #[repr(C)] S { b: [u8; 4], a: u32 });
variant!(resized #[repr(C)] S { a: u32, b: [u8; 8] });
variant!(retyped_signed #[repr(C)] S { a: i32, b: [u8; 4] });
variant!(retyped_float #[repr(C)] S { a: f32, b: [u8; 4] });
variant!(retyped_element #[repr(C)] S { a: u32, b: [u16; 2] });
variant!(retyped_nested_array #[repr(C)] S { a: u32, b: [[u8; 2]; 2] });
variant!(type_renamed #[repr(C)] T { a: u32, b: [u8; 4] });
variant!(over_aligned #[repr(C, align(8))] S { a: u32, b: [u8; 4] });

#[test]
fn same_definition_same_fingerprint_whatever_the_module() {
    assert_eq!(base::S::FINGERPRINT, same_elsewhere::S::FINGERPRINT);
}

#[test]
fn every_layout_change_changes_the_fingerprint() {
    let variants = [
        ("field added", added::S::FINGERPRINT),
        ("field removed", removed::S::FINGERPRINT),
        ("field renamed", renamed::S::FINGERPRINT),
        ("fields reordered", reordered::S::FINGERPRINT),
        ("field resized", resized::S::FINGERPRINT),
        ("u32 -> i32", retyped_signed::S::FINGERPRINT),
        ("u32 -> f32", retyped_float::S::FINGERPRINT),
        ("[u8; 4] -> [u16; 2]", retyped_element::S::FINGERPRINT),
        ("[u8; 4] -> [[u8; 2]; 2]", retyped_nested_array::S::FINGERPRINT),
        ("type renamed", type_renamed::T::FINGERPRINT),
        ("align(8)", over_aligned::S::FINGERPRINT),
    ];
    for (i, (what, fp)) in variants.iter().enumerate() {
        assert_ne!(*fp, base::S::FINGERPRINT, "{what}: same fingerprint as the base");
        for (other, fp2) in &variants[i + 1..] {
            assert_ne!(fp, fp2, "{what} and {other} collide");
        }
    }
}

mod nested_v1 {
    #[derive(Clone, Copy, typed_shm::ShmSafe)]
    #[repr(C)]
    pub struct Inner {
        pub x: u16,
        pub y: u16,
    }
    #[derive(Clone, Copy, typed_shm::ShmSafe)]
    #[repr(C)]
    pub struct Outer {
        pub id: u32,
        pub inner: [Inner; 2],
    }
}

mod nested_v2 {
    // Only a field of the inner struct is renamed.
    #[derive(Clone, Copy, typed_shm::ShmSafe)]
    #[repr(C)]
    pub struct Inner {
        pub x: u16,
        pub z: u16,
    }
    #[derive(Clone, Copy, typed_shm::ShmSafe)]
    #[repr(C)]
    pub struct Outer {
        pub id: u32,
        pub inner: [Inner; 2],
    }
}

#[test]
fn a_change_deep_inside_a_nested_struct_reaches_the_outer_fingerprint() {
    assert_ne!(nested_v1::Inner::FINGERPRINT, nested_v2::Inner::FINGERPRINT);
    assert_ne!(nested_v1::Outer::FINGERPRINT, nested_v2::Outer::FINGERPRINT);
    // The layout text names the nested type but does not expand it.
    let mut s = String::new();
    nested_v1::Outer::write_layout(&mut s);
    assert_eq!(s, "Outer { id: u32 @0, inner: [Inner; 2] @4 }");
}

variant!(as_c #[repr(C)] Celsius { value: f32 });
variant!(as_transparent #[repr(transparent)] Celsius { value: f32 });

#[test]
fn transparent_and_c_wrappers_of_one_field_have_the_same_layout() {
    // Both put the one field at offset 0 with its size and alignment, so the
    // bytes mean the same in either program.
    assert_eq!(as_c::Celsius::FINGERPRINT, as_transparent::Celsius::FINGERPRINT);
}

#[derive(Clone, Copy, ShmSafe)]
#[repr(C)]
struct Telemetry {
    seq: u64,
    temps: [f32; 8],
}

// Golden values: if one of these changes, segments written by older builds
// can no longer be attached. Do not edit the numbers; bump the header format
// version instead.
#[test]
fn golden_derived_fingerprints() {
    // The same value the library pins for its hand-built `Telemetry`.
    assert_eq!(Telemetry::FINGERPRINT, 0xec71_1289_6a15_78df);
    let got = [
        ("base::S", base::S::FINGERPRINT),
        ("nested_v1::Inner", nested_v1::Inner::FINGERPRINT),
        ("nested_v1::Outer", nested_v1::Outer::FINGERPRINT),
        ("over_aligned::S", over_aligned::S::FINGERPRINT),
        ("as_transparent::Celsius", as_transparent::Celsius::FINGERPRINT),
    ];
    let want: [u64; 5] = [
        0x9575_c9f0_4f89_b2bd,
        0xc09a_d356_e916_e13d,
        0x60ba_bbda_b5a2_6854,
        0xa8d6_ac02_1bee_75aa,
        0xebcf_7c47_d67a_417b,
    ];
    for ((name, g), w) in got.iter().zip(want) {
        assert_eq!(*g, w, "fingerprint of {name} changed: {g:#018x}");
    }
}

/// The stored layout is built from the same facts as the fingerprint: for
/// every variant above, and for nested and tuple structs, recomputing the
/// fingerprint from the layout gives the derived one, and every variant's
/// layout differs from the base's.
#[test]
fn the_layout_is_covered_by_the_fingerprint() {
    use typed_shm::inspect::{Layout, decode};
    use typed_shm::{Primitive, TypeLayout};

    #[derive(Clone, Copy, ShmSafe)]
    #[repr(C)]
    struct Inner {
        x: i16,
        y: [u16; 3],
    }
    #[derive(Clone, Copy, ShmSafe)]
    #[repr(C)]
    struct Outer {
        n: usize,
        inner: [Inner; 2],
        last: Inner,
        _pad: [u8; 8],
    }
    #[derive(Clone, Copy, ShmSafe)]
    #[repr(transparent)]
    struct Meters(f64);

    fn check<T: ShmSafe>() -> Layout {
        assert_eq!(T::LAYOUT.fingerprint(), T::FINGERPRINT);
        assert_eq!(T::LAYOUT.size(), size_of::<T>());
        let back = decode(&T::LAYOUT.encode()).expect("decodes");
        assert_eq!(back, Layout::from(T::LAYOUT));
        assert_eq!(back.fingerprint(), T::FINGERPRINT);
        back
    }
    let variants = [
        check::<base::S>(),
        check::<added::S>(),
        check::<removed::S>(),
        check::<renamed::S>(),
        check::<reordered::S>(),
        check::<resized::S>(),
        check::<retyped_signed::S>(),
        check::<retyped_float::S>(),
        check::<retyped_element::S>(),
        check::<retyped_nested_array::S>(),
        check::<type_renamed::T>(),
        check::<over_aligned::S>(),
    ];
    for (i, v) in variants.iter().enumerate().skip(1) {
        assert_ne!(*v, variants[0], "variant {i}");
    }
    assert_eq!(check::<base::S>(), check::<same_elsewhere::S>());

    let outer = check::<Outer>();
    assert_eq!(
        outer.to_string(),
        "Outer { n: usize @0, inner: [Inner; 2] @8, last: Inner @24, _pad: [u8; 8] @32 }"
    );
    let TypeLayout::Struct { fields, .. } = Outer::LAYOUT else {
        panic!("a struct")
    };
    assert_eq!(
        *fields[0].layout,
        TypeLayout::Primitive {
            kind: Primitive::Usize,
            size: size_of::<usize>(),
            align: align_of::<usize>()
        }
    );
    let TypeLayout::Array { element, len: 2, .. } = fields[1].layout else {
        panic!("an array of two")
    };
    assert_eq!(*element, Inner::LAYOUT);
    let meters = check::<Meters>();
    assert_eq!(meters.to_string(), "Meters { 0: f64 @0 }");
}
