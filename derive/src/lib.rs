//! `#[derive(ShmSafe)]` for [typed-shm](https://docs.rs/typed-shm): checks at
//! compile time that a struct may live in shared memory, and gives it its
//! layout fingerprint. Use it through `typed_shm::ShmSafe`; this crate is an
//! implementation detail of `typed-shm`.
//!
//! The macro works in three steps: parse and validate the input (each refusal
//! is a `syn::Error` on the offending token), then expand into `unsafe impl`s
//! plus compile-time checks that the compiler evaluates (field types, padding,
//! `Copy`).

mod expand;
mod input;
mod options;
mod repr;

use proc_macro::TokenStream;

/// Derives `typed_shm::ShmSafe` (and `bytemuck::Pod` and `Zeroable`, which it
/// requires): the type may live in memory shared between processes.
///
/// One derive is all a struct needs, next to `Clone` and `Copy`:
///
/// ```
/// use typed_shm::{SharedMemory, ShmSafe};
///
/// #[derive(Clone, Copy, ShmSafe)]
/// #[repr(C)]
/// struct Telemetry {
///     seq: u64,
///     temps: [f32; 8],
/// }
///
/// # let key = format!("doc-derive-{}", std::process::id());
/// let shm = SharedMemory::<Telemetry>::create(&key, Telemetry { seq: 0, temps: [0.0; 8] })?;
/// shm.lock().unwrap().seq += 1;
/// assert_eq!(shm.lock().unwrap().seq, 1);
///
/// // It is `bytemuck::Pod`, so it can be viewed as bytes…
/// let t = Telemetry { seq: 1, temps: [0.5; 8] };
/// assert_eq!(bytemuck::bytes_of(&t).len(), 40);
///
/// // …and it has a readable layout and a fingerprint, which `attach` compares.
/// let mut layout = String::new();
/// Telemetry::write_layout(&mut layout);
/// assert_eq!(layout, "Telemetry { seq: u64 @0, temps: [f32; 8] @8 }");
/// assert_ne!(Telemetry::FINGERPRINT, 0);
/// # Ok::<(), typed_shm::Error>(())
/// ```
///
/// A program whose `Telemetry` has another layout cannot attach, even when the
/// size is the same:
///
/// ```
/// # use typed_shm::{ErrorKind, SharedMemory, ShmSafe};
/// # #[derive(Clone, Copy, ShmSafe)]
/// # #[repr(C)]
/// # struct Telemetry { seq: u64, temps: [f32; 8] }
/// mod other_program {
///     #[derive(Clone, Copy, typed_shm::ShmSafe)]
///     #[repr(C)]
///     pub struct Telemetry { pub seq: u32, pub flags: u32, pub temps: [f32; 8] }
/// }
///
/// # let key = format!("doc-derive-mismatch-{}", std::process::id());
/// let shm = SharedMemory::<Telemetry>::create(&key, Telemetry { seq: 0, temps: [0.0; 8] })?;
/// let err = SharedMemory::<other_program::Telemetry>::attach(&key).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::LayoutMismatch);
/// assert!(err.to_string().contains("holds Telemetry { seq: u64 @0, temps: [f32; 8] @8 }"));
/// assert!(err.to_string().contains("expects Telemetry { seq: u32 @0, flags: u32 @4, temps: [f32; 8] @8 }"));
/// # Ok::<(), typed_shm::Error>(())
/// ```
///
/// # What the derive checks
///
/// Each of these is a compile error that points at the offending token and
/// says how to fix it:
///
/// - the struct must be `#[repr(C)]` (optionally with `align(N)`) or
///   `#[repr(transparent)]`; `packed`, `repr(Rust)` and integer reprs are
///   refused;
/// - every field type must itself be `ShmSafe`: integers, `f32`, `f64`,
///   arrays `[T; N]` of `ShmSafe` types, and structs that derive `ShmSafe`.
///   Raw pointers, references, `bool`, `char`, enums, `Option`, `String`,
///   `Vec`, `Box`, tuples and function pointers are refused, on the field;
/// - no padding anywhere, not even at the end: the error says how many bytes
///   are missing where, and which `_pad: [u8; N]` fields to add;
/// - no enums, unions, zero-sized structs or generic structs (see below);
/// - the struct must be `Copy`.
///
/// # The fingerprint
///
/// `FINGERPRINT` is a `const` built by `typed_shm::FingerprintBuilder` from the
/// struct's name (without its module path), `size_of`, `align_of`, and each
/// field's name, `offset_of!` and fingerprint, recursively. Adding, removing,
/// renaming, reordering or resizing a field changes it, and so does a change
/// of `usize`'s width; two programs built separately from the same definition
/// agree. `write_layout` gives the readable form that a `LayoutMismatch` error
/// shows: `Telemetry { seq: u64 @0, temps: [f32; 8] @8 }`.
///
/// # Generics are refused
///
/// Padding and the fingerprint of `struct Buf<T> { a: u8, b: T }` depend on
/// `T`, and a check that fires only when a padded instantiation is used would
/// still leave an unsound `Pod` impl behind. So the derive refuses generic
/// parameters (types, lifetimes and const generics alike); write a concrete
/// struct, or a concrete wrapper around each size you need.
///
/// # With bytemuck's own derives
///
/// The derive implements `bytemuck::Pod` and `Zeroable` itself. If the struct
/// already gets them elsewhere — `#[derive(bytemuck::Pod, bytemuck::Zeroable)]`
/// or hand-written impls — say `#[shm_safe(external_pod)]`, and the derive
/// emits only `ShmSafe` (it still makes every check above):
///
/// ```
/// use typed_shm::ShmSafe;
///
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable, ShmSafe)]
/// #[repr(C)]
/// #[shm_safe(external_pod)]
/// struct Sample {
///     t: u64,
///     value: f64,
/// }
/// # let _ = Sample::FINGERPRINT;
/// ```
///
/// # Where `typed_shm` is: `#[shm_safe(crate = "…")]`
///
/// The generated code names `::typed_shm`. When a crate reaches typed-shm
/// under another path — renamed in `Cargo.toml`, or re-exported by another
/// crate — say where with `crate = "path"`:
///
/// ```
/// // A crate that re-exports typed-shm to its users as `my_ipc::shm`.
/// mod my_ipc {
///     pub use typed_shm as shm;
/// }
///
/// #[derive(Clone, Copy, my_ipc::shm::ShmSafe)]
/// #[repr(C)]
/// #[shm_safe(crate = "crate::my_ipc::shm")]
/// struct Sample {
///     t: u64,
///     value: f64,
/// }
/// # fn main() {
/// #     use my_ipc::shm::ShmSafe as _;
/// #     assert_ne!(Sample::FINGERPRINT, 0);
/// # }
/// ```
///
/// The path must name **this crate**, `typed_shm` itself (under any name or
/// re-export), and it is trusted like an `unsafe` block: the derive emits
/// `unsafe impl`s whose soundness rests on the checks it reaches through that
/// path (the field bounds, the padding check, the `Copy` check). A path to a
/// module that only looks like it — one that provides items of the same
/// names but checks less, or re-exports the real traits next to lax checks —
/// compiles and makes those `unsafe impl`s unsound. Other paths, such as
/// another crate's, fail to compile. Without the option the path is
/// `::typed_shm`, which needs no trust.
///
/// # `unsafe_code`
///
/// The emitted `unsafe impl`s carry `#[allow(unsafe_code)]`, so a crate with
/// `#![deny(unsafe_code)]` can use the derive. `#![forbid(unsafe_code)]` cannot
/// be overridden by an `allow`, so it does not compile with the derive (as with
/// bytemuck's and zerocopy's derives): use `deny`.
///
/// # Examples of refusals
///
/// A `bool` field (use `u8`):
///
/// ```compile_fail
/// #[derive(Clone, Copy, typed_shm::ShmSafe)]
/// #[repr(C)]
/// struct Flags { ready: bool }
/// ```
///
/// A raw pointer, which `bytemuck::Pod` would allow:
///
/// ```compile_fail
/// #[derive(Clone, Copy, typed_shm::ShmSafe)]
/// #[repr(C)]
/// struct Node { next: *const u8 }
/// ```
///
/// No `#[repr(C)]`:
///
/// ```compile_fail
/// #[derive(Clone, Copy, typed_shm::ShmSafe)]
/// struct Point { x: u32, y: u32 }
/// ```
///
/// Padding (3 bytes after `flag`; the error suggests `_pad0: [u8; 3]`):
///
/// ```compile_fail
/// #[derive(Clone, Copy, typed_shm::ShmSafe)]
/// #[repr(C)]
/// struct Header { flag: u8, len: u32 }
/// ```
///
/// With the padding made explicit it compiles:
///
/// ```
/// #[derive(Clone, Copy, typed_shm::ShmSafe)]
/// #[repr(C)]
/// struct Header { flag: u8, _pad0: [u8; 3], len: u32 }
/// ```
///
/// An enum:
///
/// ```compile_fail
/// #[derive(Clone, Copy, typed_shm::ShmSafe)]
/// #[repr(u8)]
/// enum State { Idle, Busy }
/// ```
///
/// A generic struct:
///
/// ```compile_fail
/// #[derive(Clone, Copy, typed_shm::ShmSafe)]
/// #[repr(C)]
/// struct Pair<T> { a: T, b: T }
/// ```
#[proc_macro_derive(ShmSafe, attributes(shm_safe))]
pub fn derive_shm_safe(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    match input::Struct::parse(input) {
        Ok(s) => expand::expand(&s).into(),
        Err(e) => e.to_compile_error().into(),
    }
}
