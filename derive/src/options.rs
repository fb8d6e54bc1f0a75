//! The `#[shm_safe(...)]` helper attribute.

use syn::{Attribute, Error, LitStr, Path, Result};

/// Options a user can set with `#[shm_safe(...)]` on the struct.
pub struct Options {
    /// `external_pod`: `bytemuck::Pod` and `Zeroable` are implemented
    /// elsewhere (bytemuck's own derives, or by hand); emit neither.
    pub external_pod: bool,
    /// `crate = "path"`: where `typed_shm` is, for a renamed or re-exported
    /// dependency. Trusted like `unsafe`: the emitted `unsafe impl`s rely on
    /// the checks found through this path, so it must name typed_shm itself
    /// (the derive's docs say so to users).
    pub krate: Path,
}

impl Options {
    pub fn parse(attrs: &[Attribute]) -> Result<Self> {
        let mut options = Options {
            external_pod: false,
            krate: syn::parse_quote!(::typed_shm),
        };
        for attr in attrs.iter().filter(|a| a.path().is_ident("shm_safe")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("external_pod") {
                    options.external_pod = true;
                    Ok(())
                } else if meta.path.is_ident("crate") {
                    let lit: LitStr = meta.value()?.parse()?;
                    options.krate = lit.parse()?;
                    Ok(())
                } else {
                    Err(Error::new_spanned(
                        &meta.path,
                        "unknown `shm_safe` option: expected `external_pod` or \
                         `crate = \"path::to::typed_shm\"`",
                    ))
                }
            })?;
        }
        Ok(options)
    }
}
