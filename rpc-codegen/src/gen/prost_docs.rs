//! prost-build documents messages, fields and enums only with the comments the `.proto` has.
//! Crates that deny `missing_docs` (ours do) need a doc on every public item, so the ones prost
//! left bare get a short generated line instead of a blanket `#[allow(missing_docs)]`.

use std::path::Path;

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::{Attribute, Fields, Item, Visibility};

use crate::error::Error;

/// prost's code for one package with every public item documented.
pub(super) fn with_docs(code: &str, idl: &Path) -> Result<TokenStream, Error> {
    let mut file = syn::parse_file(code).map_err(|source| Error::Generated {
        file: idl.to_path_buf(),
        source,
    })?;
    for item in &mut file.items {
        document(item);
    }
    let items = &file.items;
    Ok(quote!(#(#items)*))
}

fn has_doc(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| a.path().is_ident("doc"))
}

fn add_doc(attrs: &mut Vec<Attribute>, text: &str) {
    if !has_doc(attrs) {
        let text = format!(" {text}");
        attrs.insert(0, syn::parse_quote!(#[doc = #text]));
    }
}

fn is_oneof(attrs: &[Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("derive"))
        .any(|a| a.meta.to_token_stream().to_string().contains("Oneof"))
}

fn document(item: &mut Item) {
    match item {
        Item::Struct(s) => {
            add_doc(&mut s.attrs, &format!("The `{}` message.", s.ident));
            if let Fields::Named(fields) = &mut s.fields {
                for f in &mut fields.named {
                    if let Some(name) = &f.ident {
                        let text =
                            format!("The `{}` field.", name.to_string().trim_start_matches("r#"));
                        add_doc(&mut f.attrs, &text);
                    }
                }
            }
        }
        Item::Enum(e) => {
            let what = if is_oneof(&e.attrs) { "oneof" } else { "enum" };
            add_doc(&mut e.attrs, &format!("The `{}` {what}.", e.ident));
            for v in &mut e.variants {
                add_doc(&mut v.attrs, &format!("`{}`.", v.ident));
            }
        }
        Item::Mod(m) => {
            add_doc(&mut m.attrs, &format!("Types nested in `{}`.", m.ident));
            if let Some((_, items)) = &mut m.content {
                for i in items {
                    document(i);
                }
            }
        }
        Item::Impl(i) => {
            for it in &mut i.items {
                if let syn::ImplItem::Fn(f) = it {
                    if matches!(f.vis, Visibility::Public(_)) {
                        add_doc(&mut f.attrs, &format!("`{}`.", f.sig.ident));
                    }
                }
            }
        }
        Item::Const(c) => add_doc(&mut c.attrs, &format!("`{}`.", c.ident)),
        _ => {}
    }
}
