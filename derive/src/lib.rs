//! `#[derive(ShmSafe)]` for typed-shm (in progress: currently emits nothing).

use proc_macro::TokenStream;

/// Derives `typed_shm::ShmSafe`.
#[proc_macro_derive(ShmSafe)]
pub fn derive_shm_safe(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
