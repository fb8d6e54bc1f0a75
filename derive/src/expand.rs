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

    // One table of the fields, in declaration order. Each field type meets
    // the `ShmSafeField` bound once, spanned at the type, so a type which is
    // not `ShmSafe` is reported on the field with a message that says what
    // to do. The fingerprint, the layout and the padding check read it.
    let table = fields.iter().map(|f| {
        let (ty, member, name) = (&f.ty, &f.member, &f.name);
        let info = quote_spanned!(ty.span()=> #private::field::<#ty>);
        quote!(#info(#name, ::core::mem::offset_of!(#ident, #member)))
    });
    let count = fields.len();

    // SAFETY (of the emitted impls; the comment stays here because comments
    // do not survive into the expansion): `Zeroable`, `Pod` and `ShmSafe`
    // require
    // - a fixed layout: `input` accepted only `#[repr(C)]` (with an optional
    //   `align(N)`) or `#[repr(transparent)]`, and no `packed`;
    // - no padding and a non-zero size: the `LayoutCheck` const below fails
    //   the build unless the field sizes add up to the struct's size;
    // - every field `Pod`, with every bit pattern valid and no pointers: the
    //   `ShmSafeField` bound on each field type requires `ShmSafe: Pod`;
    // - `Copy + 'static`: the `Pod` impl requires `Copy` (see below);
    //   `input` refused generics, so there are no lifetimes;
    // - a fingerprint from the name, size, alignment and every field's name,
    //   offset and fingerprint: built below with `FingerprintBuilder`;
    // - a layout from the same facts (the same field table).
    //
    // `Pod` requires `Copy`, and `ShmSafe` requires `Pod`: for a struct
    // without `Copy`, plain impls fail with errors about bytemuck's traits
    // (and a "sealed trait" note). Instead both impls are bounded by
    // `for<'a> Struct: DeriveCopy`, whose supertrait `Copy` satisfies `Pod`
    // inside them (the `for<'a>` keeps the compiler from rejecting a bound on
    // a concrete type that does not hold: such an impl just never applies),
    // and one check, spanned at the struct's name, fails with `DeriveCopy`'s
    // message: add `#[derive(Clone, Copy)]`. With `external_pod`, the bound
    // and the check are `ExternalPod`, whose supertrait is `Pod`.
    let bound = if options.external_pod {
        quote!(#private::ExternalPod)
    } else {
        quote!(#private::DeriveCopy)
    };
    let assert = if options.external_pod {
        quote!(#private::assert_external_pod)
    } else {
        quote!(#private::assert_copy)
    };
    let requirement = quote_spanned! {ident.span()=>
        const _: () = #assert::<#ident>();
    };
    let pod = if options.external_pod {
        quote!()
    } else {
        quote! {
            #[allow(unsafe_code)]
            #[automatically_derived]
            unsafe impl #private::bytemuck::Zeroable for #ident {}
            #[allow(unsafe_code)]
            #[automatically_derived]
            unsafe impl #private::bytemuck::Pod for #ident where for<'a> #ident: #bound {}
        }
    };
    // The panic is spanned at the struct's name, so the error points there.
    // Its local is bound with the same span as its uses: a struct declared
    // by a `macro_rules!` macro has a span with another hygiene context.
    let check = syn::Ident::new("__shm_safe_check", proc_macro2::Span::call_site());
    let panic = quote_spanned!(ident.span()=>
        if let ::core::option::Option::Some(__shm_safe_message) = #check.error() {
            ::core::panic!("{}", __shm_safe_message);
        }
    );

    quote! {
        const _: () = {
            const __SHM_SAFE_FIELDS: [#private::Field; #count] = [ #( #table ),* ];
            const __SHM_SAFE_LAYOUT_FIELDS: [#private::FieldLayout; #count] =
                #private::layout_fields(&__SHM_SAFE_FIELDS);

            #requirement
            #pod

            #[allow(unsafe_code)]
            #[automatically_derived]
            unsafe impl #private::ShmSafe for #ident where for<'a> #ident: #bound {
                const FINGERPRINT: ::core::primitive::u64 = #private::fingerprint(
                    #name,
                    ::core::mem::size_of::<#ident>(),
                    ::core::mem::align_of::<#ident>(),
                    &__SHM_SAFE_FIELDS,
                );

                const LAYOUT: &'static #private::TypeLayout = &#private::TypeLayout::Struct {
                    name: #name,
                    size: ::core::mem::size_of::<#ident>(),
                    align: ::core::mem::align_of::<#ident>(),
                    fields: &__SHM_SAFE_LAYOUT_FIELDS,
                };

                fn write_type_name(out: &mut #private::String) {
                    out.push_str(#name);
                }

                fn write_layout(out: &mut #private::String) {
                    #private::write_layout(out, #name, &__SHM_SAFE_FIELDS);
                }
            }

            const _: () = {
                let #check = #private::LayoutCheck::new(
                    #name,
                    ::core::mem::size_of::<#ident>(),
                    &__SHM_SAFE_FIELDS,
                );
                #panic
            };
        };
    }
}
