//! A span-keeping parser for `#[repr(...)]`, so that each refusal points at
//! the token that causes it.

use proc_macro2::Span;
use quote::ToTokens as _;
use syn::{Attribute, Error, Ident, LitInt, Result, Token};

/// The layouts a `ShmSafe` struct may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `#[repr(C)]`, possibly with `align(N)`.
    C,
    /// `#[repr(transparent)]`.
    Transparent,
}

/// Reads every `#[repr(...)]` attribute of the struct called `ident` and
/// refuses anything but `C`, `C, align(N)` and `transparent`.
///
/// Both accepted layouts put the fields in declaration order, which is all
/// the expansion relies on (the padding check covers the rest).
pub fn check(ident: &Ident, attrs: &[Attribute]) -> Result<()> {
    let mut layout: Option<Layout> = None;
    let mut align: Option<Span> = None;
    let mut errors = Errors::default();
    let mut any_repr: Option<&Attribute> = None;
    // A repr we refused already explains itself; do not also say that
    // `repr(C)` is missing.
    let mut refused = false;

    for attr in attrs.iter().filter(|a| a.path().is_ident("repr")) {
        any_repr.get_or_insert(attr);
        let parsed = attr.parse_nested_meta(|meta| {
            let Some(word) = meta.path.get_ident() else {
                return Err(meta.error("unknown `repr` option"));
            };
            let span = word.span();
            match word.to_string().as_str() {
                "C" | "transparent" => {
                    let this = if word == "C" {
                        Layout::C
                    } else {
                        Layout::Transparent
                    };
                    match layout {
                        Some(other) if other != this => errors.push(Error::new(
                            span,
                            "conflicting `repr`: a `ShmSafe` struct is either \
                                 `#[repr(C)]` or `#[repr(transparent)]`; keep one",
                        )),
                        _ => layout = Some(this),
                    }
                }
                "align" => {
                    let content;
                    syn::parenthesized!(content in meta.input);
                    let _: LitInt = content.parse()?;
                    align = Some(span);
                }
                "packed" => {
                    if meta.input.peek(syn::token::Paren) {
                        let content;
                        syn::parenthesized!(content in meta.input);
                        let _: LitInt = content.parse()?;
                    }
                    refused = true;
                    errors.push(Error::new(
                        span,
                        "`#[derive(ShmSafe)]` does not support `packed`: fields of a \
                             packed struct can be unaligned; remove `packed` and fill the \
                             gaps with explicit `_pad: [u8; N]` fields",
                    ));
                }
                "Rust" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64"
                | "i128" | "isize" => {
                    refused = true;
                    errors.push(Error::new(
                        span,
                        format!(
                            "conflicting `repr({word})`: `#[derive(ShmSafe)]` needs \
                                 `#[repr(C)]` or `#[repr(transparent)]`"
                        ),
                    ));
                }
                _ => {
                    refused = true;
                    errors.push(Error::new(span, format!("unknown `repr({word})`")));
                }
            }
            // Skip the rest of an option we did not understand.
            if meta.input.peek(syn::token::Paren) {
                let content;
                syn::parenthesized!(content in meta.input);
                let _: proc_macro2::TokenStream = content.parse()?;
            } else if meta.input.peek(Token![=]) {
                let _: Token![=] = meta.input.parse()?;
                let _: syn::Expr = meta.input.parse()?;
            }
            Ok(())
        });
        if let Err(e) = parsed {
            errors.push(e);
        }
    }

    match layout {
        Some(Layout::Transparent) if align.is_some() => {
            errors.push(Error::new(
                align.unwrap_or_else(Span::call_site),
                "`align(N)` goes with `#[repr(C)]`, not `#[repr(transparent)]`",
            ));
        }
        Some(_) => {}
        None if refused => {}
        None => errors.push(Error::new_spanned(
            any_repr.map_or_else(|| ident.to_token_stream(), |a| a.to_token_stream()),
            format!(
                "`#[derive(ShmSafe)]` needs a fixed field layout: add `#[repr(C)]` to \
                     `{ident}` (or `#[repr(transparent)]` for a single-field wrapper); \
                     Rust's default layout may reorder fields differently in another build"
            ),
        )),
    }
    errors.finish()
}

/// Collects several errors so that one expansion reports them all.
#[derive(Default)]
pub struct Errors(Option<Error>);

impl Errors {
    pub fn push(&mut self, e: Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub fn finish(self) -> Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
