//! Expand: the `unsafe impl`s, the fingerprint, and the compile-time checks.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned as _;

use crate::input::Struct;

pub fn expand(s: &Struct) -> TokenStream {
    let Struct {
        ident,
        name,
        options,
        fields,
    } = s;
    let krate = &options.krate;
    let private = quote!(#krate::__private);

    let names: Vec<_> = fields.iter().map(|f| f.name.as_str()).collect();
    let offsets: Vec<_> = fields
        .iter()
        .map(|f| {
            let member = &f.member;
            quote!(::core::mem::offset_of!(#ident, #member))
        })
        .collect();
    // Every use of a field type goes through `ShmSafeField`, spanned at the
    // field's type, so that a type which is not `ShmSafe` is reported there
    // with a message that says what to do.
    let fingerprints = fields.iter().map(|f| {
        let ty = &f.ty;
        quote_spanned!(ty.span()=> #private::field_fingerprint::<#ty>())
    });
    let type_names = fields.iter().map(|f| {
        let ty = &f.ty;
        quote_spanned!(ty.span()=> #private::field_type_name::<#ty>)
    });
    let sizes = fields.iter().map(|f| {
        let ty = &f.ty;
        quote!(::core::mem::size_of::<#ty>())
    });

    // SAFETY (of the emitted impls; the comment stays here because comments
    // do not survive into the expansion): `Zeroable`, `Pod` and `ShmSafe`
    // require
    // - a fixed layout: `input` accepted only `#[repr(C)]` (with an optional
    //   `align(N)`) or `#[repr(transparent)]`, and no `packed`;
    // - no padding and a non-zero size: the `LayoutCheck` const below fails
    //   the build unless the field sizes add up to the struct's size;
    // - every field `Pod`, with every bit pattern valid and no pointers: the
    //   `ShmSafeField` bound on each field type requires `ShmSafe: Pod`;
    // - `Copy + 'static`: `assert_copy` and the `Pod` impl require `Copy`;
    //   `input` refused generics, so there are no lifetimes;
    // - a fingerprint from the name, size, alignment and every field's name,
    //   offset and fingerprint: built below with `FingerprintBuilder`.
    let pod = if options.external_pod {
        quote!()
    } else {
        quote! {
            #[allow(unsafe_code)]
            #[automatically_derived]
            unsafe impl #private::bytemuck::Zeroable for #ident {}
            #[allow(unsafe_code)]
            #[automatically_derived]
            unsafe impl #private::bytemuck::Pod for #ident {}
        }
    };
    let copy_check = quote_spanned!(ident.span()=> #private::assert_copy::<#ident>(););
    let panic = quote_spanned!(ident.span()=>
        if let ::core::option::Option::Some(message) = check.error() {
            ::core::panic!("{}", message);
        }
    );

    quote! {
        const _: () = {
            #pod

            #[allow(unsafe_code)]
            #[automatically_derived]
            unsafe impl #private::ShmSafe for #ident {
                const FINGERPRINT: ::core::primitive::u64 =
                    #private::FingerprintBuilder::new(
                        #name,
                        ::core::mem::size_of::<#ident>(),
                        ::core::mem::align_of::<#ident>(),
                    )
                    #( .field(#names, #offsets, #fingerprints) )*
                    .finish();

                fn write_type_name(out: &mut #private::String) {
                    out.push_str(#name);
                }

                fn write_layout(out: &mut #private::String) {
                    #private::LayoutWriter::new(out, #name)
                        #( .field(#names, #offsets, #type_names) )*
                        .finish();
                }
            }

            const _: () = {
                #copy_check
                let check = #private::LayoutCheck::new(
                    #name,
                    ::core::mem::size_of::<#ident>(),
                    &[ #( #private::FieldSpan::new(#names, #offsets, #sizes) ),* ],
                );
                #panic
            };
        };
    }
}
