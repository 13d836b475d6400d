//! `#[derive(Plugin)]`: everything that registers a recursa plugin, from its name
//! written once.
//!
//! ```ignore
//! /// TRM: T cycles of (n updates z = net(z, y + x), then y = net(y, z))
//! ///
//! /// (Later paragraphs are for rustdoc only.)
//! #[derive(Clone, Debug, Serialize, Deserialize, Plugin)]
//! #[serde(deny_unknown_fields)]
//! #[plugin(schedule = "trm")]
//! pub struct Trm {
//!     /// T, cycles per supervision step (reference H_cycles)
//!     pub h_cycles: usize,
//! }
//! ```
//!
//! generates, for the axis named in `#[plugin(...)]` (`schedule`, `target` or `halting`):
//! * the `inventory` entry `recursa plugins` prints and config errors list: the name,
//!   the first paragraph of the struct's doc comment, and each serialised field with the
//!   first paragraph of its doc comment (fields marked `#[serde(skip)]` are left out);
//! * the experiment-file config, `#[typetag::serde(name = "trm")] impl ScheduleConfig`,
//!   whose `build` runs the plugin's `check_fields` and boxes a clone of it;
//! * `impl Named` (`fn name() -> "trm"`).
//!
//! The plugin itself (`impl RecursionSchedule for Trm`) stays hand-written.

use proc_macro::TokenStream;
use proc_macro2::TokenTree;
use quote::quote;
use syn::{parse_macro_input, Attribute, Data, DeriveInput, Expr, Fields, Lit, LitStr, Meta};

#[proc_macro_derive(Plugin, attributes(plugin))]
pub fn derive_plugin(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// The first paragraph of the doc comments in `attrs`, its lines joined by spaces.
fn first_paragraph(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        let Meta::NameValue(nv) = &attr.meta else {
            continue;
        };
        let Expr::Lit(lit) = &nv.value else { continue };
        let Lit::Str(s) = &lit.lit else { continue };
        let text = s.value();
        let line = text.trim();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            break;
        }
        lines.push(line.to_string());
    }
    lines.join(" ")
}

/// Whether a field is `#[serde(skip)]` (not in the experiment file).
fn skipped(attrs: &[Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("serde"))
        .filter_map(|a| match &a.meta {
            Meta::List(list) => Some(list.tokens.clone()),
            _ => None,
        })
        .any(|tokens| {
            tokens
                .into_iter()
                .any(|t| matches!(&t, TokenTree::Ident(i) if i == "skip"))
        })
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let ident = &input.ident;
    let mut axis: Option<(String, LitStr)> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("plugin")) {
        attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            if !matches!(key.as_str(), "schedule" | "target" | "halting") {
                return Err(meta.error("expected `schedule`, `target` or `halting`"));
            }
            let name: LitStr = meta.value()?.parse()?;
            if axis.is_some() {
                return Err(meta.error("a plugin has one axis"));
            }
            axis = Some((key, name));
            Ok(())
        })?;
    }
    let Some((axis, name)) = axis else {
        return Err(syn::Error::new_spanned(
            ident,
            "add #[plugin(schedule = \"name\")] (or target = / halting =)",
        ));
    };
    let doc = first_paragraph(&input.attrs);
    if doc.is_empty() {
        return Err(syn::Error::new_spanned(
            ident,
            "a plugin needs a doc comment: its first paragraph is the `recursa plugins` line",
        ));
    }
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => named.named.iter().collect::<Vec<_>>(),
            Fields::Unit => Vec::new(),
            Fields::Unnamed(_) => {
                return Err(syn::Error::new_spanned(
                    ident,
                    "a plugin's config is a struct with named fields (they are its experiment-file keys)",
                ))
            }
        },
        _ => {
            return Err(syn::Error::new_spanned(
                ident,
                "#[derive(Plugin)] works on structs",
            ))
        }
    };
    let mut entries = Vec::new();
    for f in fields.iter().filter(|f| !skipped(&f.attrs)) {
        let field = f
            .ident
            .as_ref()
            .expect("named fields have names")
            .to_string();
        let field = field.trim_start_matches("r#").to_string();
        let field_doc = first_paragraph(&f.attrs);
        if field_doc.is_empty() {
            return Err(syn::Error::new_spanned(
                f,
                "document every field: its first doc paragraph is shown by `recursa plugins`",
            ));
        }
        entries.push(quote! {
            ::recursa_core::registry::Field { name: #field, doc: #field_doc }
        });
    }
    let (variant, config, plugin) = match axis.as_str() {
        "schedule" => (
            quote!(Schedule),
            quote!(::recursa_core::ScheduleConfig),
            quote!(::recursa_core::RecursionSchedule),
        ),
        "target" => (
            quote!(Target),
            quote!(::recursa_core::TargetConfig),
            quote!(::recursa_core::SupervisionTarget),
        ),
        _ => (
            quote!(Halting),
            quote!(::recursa_core::HaltingConfig),
            quote!(::recursa_core::HaltingPolicy),
        ),
    };
    Ok(quote! {
        ::inventory::submit! {
            ::recursa_core::registry::PluginEntry {
                name: #name,
                axis: ::recursa_core::registry::Axis::#variant,
                doc: #doc,
                fields: &[#(#entries),*],
            }
        }

        #[typetag::serde(name = #name)]
        impl #config for #ident {
            fn build(&self) -> ::recursa_core::Result<::std::boxed::Box<dyn #plugin>> {
                #plugin::check_fields(self)?;
                ::std::result::Result::Ok(::std::boxed::Box::new(::std::clone::Clone::clone(self)))
            }
        }

        impl ::recursa_core::registry::Named for #ident {
            fn name(&self) -> &'static str {
                #name
            }
        }
    })
}
