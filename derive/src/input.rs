//! Parse and validate: turn the derive input into a [`Struct`] the expansion
//! can trust, or into errors that point at the offending tokens.

use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;
use syn::{Data, DeriveInput, Error, Fields, Ident, Member, Result, Type};

use crate::options::Options;
use crate::repr::{self, Errors};

/// A struct that passed every check the macro can make by itself; the rest
/// (field types, padding, `Copy`) is checked by the compiler on the
/// generated code.
pub struct Struct {
    pub ident: Ident,
    /// The name that enters the fingerprint and the layout description.
    pub name: String,
    pub options: Options,
    pub fields: Vec<Field>,
}

pub struct Field {
    /// The name that enters the fingerprint (`"0"`, `"1"`, … for a tuple
    /// struct).
    pub name: String,
    /// How to name the field in `offset_of!`.
    pub member: Member,
    pub ty: Type,
}

impl Struct {
    pub fn parse(input: DeriveInput) -> Result<Self> {
        let DeriveInput {
            attrs,
            ident,
            generics,
            data,
            ..
        } = input;
        let fields = match data {
            Data::Struct(s) => s.fields,
            Data::Enum(e) => {
                return Err(Error::new(
                    e.enum_token.span,
                    "`ShmSafe` cannot be derived for an enum: another process could \
                     write a discriminant that is no variant; store the tag as an \
                     integer field (e.g. `kind: u8`) with named constants",
                ));
            }
            Data::Union(u) => {
                return Err(Error::new(
                    u.union_token.span,
                    "`ShmSafe` cannot be derived for a union: which field is live is not \
                     known to another process; use a byte array (`[u8; N]`) and convert \
                     with `bytemuck`",
                ));
            }
        };

        let mut errors = Errors::default();
        if !generics.params.is_empty() {
            errors.push(Error::new_spanned(
                &generics,
                "`ShmSafe` cannot be derived for a generic struct: its padding and \
                 fingerprint depend on the parameters and cannot be checked for all of \
                 them; write a concrete struct (e.g. `[f32; 64]` instead of `[T; N]`)",
            ));
        } else if let Some(w) = &generics.where_clause {
            errors.push(Error::new_spanned(
                w,
                "`#[derive(ShmSafe)]` does not support `where` clauses",
            ));
        }
        if let Err(e) = repr::check(&ident, &attrs) {
            errors.push(e);
        }
        let options = Options::parse(&attrs);
        if let Err(e) = &options {
            errors.push(e.clone());
        }

        if fields.is_empty() {
            let span = match &fields {
                Fields::Named(f) => f.brace_token.span.join(),
                Fields::Unnamed(f) => f.paren_token.span.join(),
                Fields::Unit => ident.span(),
            };
            errors.push(Error::new(
                span,
                format!(
                    "`{ident}` has no fields: a zero-sized type cannot live in shared \
                     memory; add a field"
                ),
            ));
        }

        let mut out = Vec::with_capacity(fields.len());
        for (i, field) in fields.into_iter().enumerate() {
            check_field_type(&field.ty, &mut errors);
            let (name, member) = match field.ident {
                Some(id) => (id.unraw().to_string(), Member::Named(id)),
                None => (
                    i.to_string(),
                    Member::Unnamed(syn::Index {
                        index: i as u32,
                        span: field.ty.span(),
                    }),
                ),
            };
            out.push(Field {
                name,
                member,
                ty: field.ty,
            });
        }

        errors.finish()?;
        Ok(Struct {
            name: ident.unraw().to_string(),
            ident,
            // Its error, if any, was reported by `errors` already.
            options: options?,
            fields: out,
        })
    }
}

/// Refuses, with a targeted message, the field types that are wrong by
/// their syntax alone. Everything else is checked by the `ShmSafeField`
/// bound in the generated code (which also catches these behind a type
/// alias).
fn check_field_type(ty: &Type, errors: &mut Errors) {
    let refuse = |errors: &mut Errors, msg: &str| errors.push(Error::new_spanned(ty, msg));
    match ty {
        Type::Array(a) => check_field_type(&a.elem, errors),
        Type::Group(g) => check_field_type(&g.elem, errors),
        Type::Paren(p) => check_field_type(&p.elem, errors),
        Type::Ptr(_) => refuse(
            errors,
            "a raw pointer cannot live in shared memory: an address means nothing in \
             another process; store an offset or an index (`u64`) instead",
        ),
        Type::Reference(_) => refuse(
            errors,
            "a reference cannot live in shared memory: an address means nothing in \
             another process; store the value itself, or an offset or index (`u64`)",
        ),
        Type::BareFn(_) => refuse(
            errors,
            "a function pointer cannot live in shared memory: code addresses differ \
             between processes; store a number that selects the function",
        ),
        Type::TraitObject(_) | Type::ImplTrait(_) => refuse(
            errors,
            "a trait object cannot live in shared memory; use a concrete `ShmSafe` type",
        ),
        Type::Slice(_) => refuse(
            errors,
            "a slice has no fixed size; use an array `[T; N]`, or a \
             `SharedMemory<[T]>` for a slice segment",
        ),
        Type::Tuple(t) if t.elems.is_empty() => {
            refuse(errors, "`()` is zero-sized and carries nothing; remove the field")
        }
        Type::Tuple(_) => refuse(
            errors,
            "a tuple has no fixed layout; use an array, or a struct with \
             `#[derive(ShmSafe)]`",
        ),
        Type::Path(p) if p.qself.is_none() => {
            if p.path.is_ident("bool") {
                refuse(
                    errors,
                    "`bool` cannot live in shared memory: another process could store \
                     a byte other than 0 or 1; use `u8` (and `!= 0` to read it)",
                );
            } else if p.path.is_ident("char") {
                refuse(
                    errors,
                    "`char` cannot live in shared memory: another process could store \
                     a value that is not a Unicode scalar; use `u32` (and \
                     `char::from_u32` to read it)",
                );
            }
        }
        _ => {}
    }
}
