//! Thrift types: Rust structs, unions (enums), exceptions, enums (open newtypes), typedefs and
//! constants, with `TSerializable` (binary protocol through the `thrift` crate's traits) and
//! `ThriftMessage` (exact encoded length and a statically dispatched writer of the same bytes,
//! what `ThriftCodec` encodes with).
//!
//! Writing uses empty struct names and `None` field names, so no per-field allocation.
//! Reading skips unknown fields and fields of an unexpected type, fails on a missing
//! `required` field, and pre-allocates at most [`MAX_PREALLOC`] container elements whatever
//! size the wire claims (rpc-core's reader already bounds sizes by the bytes left).
//!
//! Enums are `struct Color(pub i32)` with a constant per value rather than Rust enums, so a
//! value added by a newer peer survives decoding and re-encoding instead of failing the whole
//! message (the same choice Apache Thrift's Rust generator makes).

use std::collections::HashSet;

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use super::{doc_attrs, Cx};
use crate::ir::*;
use crate::names;

/// Most container elements pre-allocated when reading, whatever size the wire claims.
pub(crate) const MAX_PREALLOC: usize = 1024;

fn thrift() -> TokenStream {
    quote!(::rpc_core::codegen::thrift)
}

/// The wire type of `ty`: its `TType` variant and its `thrift_wire` constant (one table, so the
/// two can never disagree).
fn type_ids(ty: &TypeRef) -> (&'static str, &'static str) {
    match ty.resolved() {
        TypeRef::Bool => ("Bool", "BOOL"),
        TypeRef::I8 => ("I08", "I8"),
        TypeRef::I16 => ("I16", "I16"),
        TypeRef::I32
        | TypeRef::Named(NamedRef {
            kind: NamedKind::Enum,
            ..
        }) => ("I32", "I32"),
        TypeRef::I64 => ("I64", "I64"),
        TypeRef::Double => ("Double", "DOUBLE"),
        TypeRef::String | TypeRef::Binary => ("String", "STRING"),
        TypeRef::List(_) => ("List", "LIST"),
        TypeRef::Set(_) => ("Set", "SET"),
        TypeRef::Map(..) => ("Map", "MAP"),
        TypeRef::Named(_) | TypeRef::Rust(_) => ("Struct", "STRUCT"),
    }
}

fn ttype(ty: &TypeRef) -> TokenStream {
    let t = thrift();
    let v = format_ident!("{}", type_ids(ty).0);
    quote!(#t::protocol::TType::#v)
}

fn wire() -> TokenStream {
    quote!(::rpc_core::codegen::thrift_wire)
}

/// The `thrift_wire` constant of the type id of `ty`.
fn wire_type(ty: &TypeRef) -> TokenStream {
    let w = wire();
    let v = format_ident!("{}", type_ids(ty).1);
    quote!(#w::#v)
}

/// The encoded length of every value of `ty`, when it does not depend on the value.
fn fixed_len(ty: &TypeRef) -> Option<usize> {
    match ty.resolved() {
        TypeRef::Bool | TypeRef::I8 => Some(1),
        TypeRef::I16 => Some(2),
        TypeRef::I32
        | TypeRef::Named(NamedRef {
            kind: NamedKind::Enum,
            ..
        }) => Some(4),
        TypeRef::I64 | TypeRef::Double => Some(8),
        _ => None,
    }
}

/// `thrift::Error::Protocol(ProtocolError::new(kind, message))`.
fn protocol_error(kind: &str, message: &str) -> TokenStream {
    let t = thrift();
    let kind = format_ident!("{kind}");
    quote! {
        #t::Error::Protocol(#t::ProtocolError::new(#t::ProtocolErrorKind::#kind, #message))
    }
}

/// How a struct-like type is generated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    Struct,
    Union,
    Exception,
}

impl<'a> Cx<'a> {
    pub(super) fn type_def(&self, p: &Package, t: &TypeDef) -> TokenStream {
        let name = names::ident(&t.rust_name);
        match &t.kind {
            TypeDefKind::Struct(fields) => {
                let doc = doc_attrs(&t.doc, &format!("The thrift struct `{}`.", t.name));
                self.struct_like(p, &doc, &t.rust_name, &t.name, fields, Shape::Struct)
            }
            TypeDefKind::Union(fields) => {
                let doc = doc_attrs(&t.doc, &format!("The thrift union `{}`.", t.name));
                self.struct_like(p, &doc, &t.rust_name, &t.name, fields, Shape::Union)
            }
            TypeDefKind::Exception(fields) => {
                let doc = doc_attrs(&t.doc, &format!("The thrift exception `{}`.", t.name));
                self.struct_like(p, &doc, &t.rust_name, &t.name, fields, Shape::Exception)
            }
            TypeDefKind::Enum(values) => enum_def(t, values),
            TypeDefKind::Alias(target) => {
                let doc = doc_attrs(&t.doc, &format!("The thrift typedef `{}`.", t.name));
                let target = self.rust_type(p, target);
                quote! {
                    #doc
                    pub type #name = #target;
                }
            }
        }
    }

    /// A struct, exception or union with its `TSerializable` implementation. Also used for
    /// the Args and Result structs of unary methods.
    pub(super) fn struct_like(
        &self,
        p: &Package,
        doc: &TokenStream,
        rust_name: &str,
        idl_name: &str,
        fields: &[FieldDef],
        shape: Shape,
    ) -> TokenStream {
        let name = names::ident(rust_name);
        let float = fields.iter().any(|f| self.index.contains_double(&f.ty));
        let ord = if float {
            quote!()
        } else {
            quote!(Eq, Hash, PartialOrd, Ord,)
        };
        let has_defaults = fields.iter().any(|f| f.default.is_some());
        let default_ok = shape != Shape::Union && self.index.fields_have_default(fields);
        let derive_default = if default_ok && !has_defaults {
            quote!(Default,)
        } else {
            quote!()
        };
        let t = thrift();
        let (def, write, read) = if shape == Shape::Union {
            self.union_parts(p, &name, idl_name, fields)
        } else {
            self.struct_parts(p, &name, idl_name, fields)
        };
        let default_impl = if default_ok && has_defaults {
            let inits = fields.iter().map(|f| {
                let fname = names::ident(&f.rust_name);
                let value = match &f.default {
                    None => quote!(::core::default::Default::default()),
                    Some(v) => {
                        let v = self.const_expr(p, &f.ty, v);
                        let v = if f.boxed {
                            quote!(::std::boxed::Box::new(#v))
                        } else {
                            v
                        };
                        if f.req == Requiredness::Optional {
                            quote!(::core::option::Option::Some(#v))
                        } else {
                            v
                        }
                    }
                };
                quote!(#fname: #value)
            });
            quote! {
                impl ::core::default::Default for #name {
                    fn default() -> Self {
                        Self { #(#inits,)* }
                    }
                }
            }
        } else {
            quote!()
        };
        let error_impls = if shape == Shape::Exception {
            quote! {
                impl ::core::fmt::Display for #name {
                    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                        ::core::fmt::Debug::fmt(self, f)
                    }
                }
                impl ::std::error::Error for #name {}
            }
        } else {
            quote!()
        };
        let message_impl = self.message_impl(&name, fields, shape);
        quote! {
            #doc
            #[derive(Debug, Clone, PartialEq, #ord #derive_default)]
            #def
            #default_impl
            #error_impls
            #message_impl
            impl #t::protocol::TSerializable for #name {
                fn read_from_in_protocol(
                    i: &mut dyn #t::protocol::TInputProtocol,
                ) -> #t::Result<Self> {
                    #read
                }
                fn write_to_out_protocol(
                    &self,
                    o: &mut dyn #t::protocol::TOutputProtocol,
                ) -> #t::Result<()> {
                    #write
                }
            }
        }
    }

    fn field_type(&self, p: &Package, f: &FieldDef) -> TokenStream {
        let ty = self.rust_type(p, &f.ty);
        if f.boxed {
            quote!(::std::boxed::Box<#ty>)
        } else {
            ty
        }
    }

    /// (definition, write body, read body) of a struct or exception.
    fn struct_parts(
        &self,
        p: &Package,
        name: &proc_macro2::Ident,
        idl_name: &str,
        fields: &[FieldDef],
    ) -> (TokenStream, TokenStream, TokenStream) {
        let t = thrift();
        let defs = fields.iter().map(|f| {
            let fname = names::ident(&f.rust_name);
            let doc = doc_attrs(
                &f.doc,
                &format!("Field {} `{}`{}.", f.id, f.name, req_note(f.req)),
            );
            let ty = self.field_type(p, f);
            let ty = if f.req == Requiredness::Optional {
                quote!(::core::option::Option<#ty>)
            } else {
                ty
            };
            quote! {
                #doc
                pub #fname: #ty
            }
        });
        let writes = fields.iter().map(|f| {
            let fname = names::ident(&f.rust_name);
            let begin = field_begin(f);
            let value = if f.boxed { quote!(&**v) } else { quote!(v) };
            let body = self.write_value(&f.ty, &value, 0);
            if f.req == Requiredness::Optional {
                quote! {
                    if let ::core::option::Option::Some(v) = &self.#fname {
                        #begin
                        #body
                        o.write_field_end()?;
                    }
                }
            } else {
                quote! {
                    {
                        let v = &self.#fname;
                        #begin
                        #body
                        o.write_field_end()?;
                    }
                }
            }
        });
        let locals: Vec<_> = (0..fields.len()).map(|i| format_ident!("f{i}")).collect();
        // The locals' types are inferred from the assignments below (spelling them out trips
        // clippy's type_complexity on nested containers).
        let decls = locals
            .iter()
            .map(|l| quote!(let mut #l = ::core::option::Option::None;));
        let arms = fields.iter().zip(&locals).map(|(f, l)| {
            let id = signed(i64::from(f.id), "");
            let tt = ttype(&f.ty);
            let read = self.read_value(p, &f.ty, 0);
            let read = if f.boxed {
                quote!(::std::boxed::Box::new(#read))
            } else {
                read
            };
            quote! {
                (::core::option::Option::Some(#id), #tt) => {
                    #l = ::core::option::Option::Some(#read);
                }
            }
        });
        let inits = fields.iter().zip(&locals).map(|(f, l)| {
            let fname = names::ident(&f.rust_name);
            let missing = protocol_error(
                "InvalidData",
                &format!(
                    "{idl_name}: required field `{}` (id {}) is missing",
                    f.name, f.id
                ),
            );
            let value = match f.req {
                Requiredness::Optional => quote!(#l),
                Requiredness::Required => quote!(#l.ok_or_else(|| #missing)?),
                Requiredness::Default => match &f.default {
                    Some(value) => {
                        let d = self.const_expr(p, &f.ty, value);
                        let d = if f.boxed {
                            quote!(::std::boxed::Box::new(#d))
                        } else {
                            d
                        };
                        if is_cheap(value) && !f.boxed {
                            quote!(#l.unwrap_or(#d))
                        } else {
                            quote!(#l.unwrap_or_else(|| #d))
                        }
                    }
                    None if self.index.has_default(&f.ty) => quote!(#l.unwrap_or_default()),
                    None => quote!(#l.ok_or_else(|| #missing)?),
                },
            };
            quote!(#fname: #value)
        });
        let def = quote! {
            pub struct #name {
                #(#defs,)*
            }
        };
        let write = quote! {
            o.write_struct_begin(&#t::protocol::TStructIdentifier {
                name: ::std::string::String::new(),
            })?;
            #(#writes)*
            o.write_field_stop()?;
            o.write_struct_end()
        };
        let read = quote! {
            i.read_struct_begin()?;
            #(#decls)*
            loop {
                let field = i.read_field_begin()?;
                match (field.id, field.field_type) {
                    (_, #t::protocol::TType::Stop) => break,
                    #(#arms)*
                    (_, other) => i.skip(other)?,
                }
                i.read_field_end()?;
            }
            i.read_struct_end()?;
            ::core::result::Result::Ok(Self { #(#inits,)* })
        };
        (def, write, read)
    }

    /// (definition, write body, read body) of a union: a Rust enum, one variant per field.
    fn union_parts(
        &self,
        p: &Package,
        name: &proc_macro2::Ident,
        idl_name: &str,
        fields: &[FieldDef],
    ) -> (TokenStream, TokenStream, TokenStream) {
        let t = thrift();
        let variant = |f: &FieldDef| names::ident(&names::camel(&f.name));
        let defs = fields.iter().map(|f| {
            let v = variant(f);
            let doc = doc_attrs(&f.doc, &format!("Field {} `{}`.", f.id, f.name));
            let ty = self.field_type(p, f);
            quote! {
                #doc
                #v(#ty)
            }
        });
        let writes = fields.iter().map(|f| {
            let v = variant(f);
            let begin = field_begin(f);
            let value = if f.boxed { quote!(&**v) } else { quote!(v) };
            let body = self.write_value(&f.ty, &value, 0);
            quote! {
                Self::#v(v) => {
                    #begin
                    #body
                    o.write_field_end()?;
                }
            }
        });
        let twice = protocol_error(
            "InvalidData",
            &format!("{idl_name}: union has more than one field set"),
        );
        let none = protocol_error(
            "InvalidData",
            &format!("{idl_name}: union has no field set"),
        );
        let arms = fields.iter().map(|f| {
            let v = variant(f);
            let id = signed(i64::from(f.id), "");
            let tt = ttype(&f.ty);
            let read = self.read_value(p, &f.ty, 0);
            let read = if f.boxed {
                quote!(::std::boxed::Box::new(#read))
            } else {
                read
            };
            quote! {
                (::core::option::Option::Some(#id), #tt) => {
                    if value.replace(Self::#v(#read)).is_some() {
                        return ::core::result::Result::Err(#twice);
                    }
                }
            }
        });
        let def = quote! {
            pub enum #name {
                #(#defs,)*
            }
        };
        let write = quote! {
            o.write_struct_begin(&#t::protocol::TStructIdentifier {
                name: ::std::string::String::new(),
            })?;
            match self {
                #(#writes)*
            }
            o.write_field_stop()?;
            o.write_struct_end()
        };
        let read = quote! {
            i.read_struct_begin()?;
            let mut value: ::core::option::Option<Self> = ::core::option::Option::None;
            loop {
                let field = i.read_field_begin()?;
                match (field.id, field.field_type) {
                    (_, #t::protocol::TType::Stop) => break,
                    #(#arms)*
                    (_, other) => i.skip(other)?,
                }
                i.read_field_end()?;
            }
            i.read_struct_end()?;
            value.ok_or_else(|| #none)
        };
        (def, write, read)
    }

    /// The `ThriftMessage` impl of a struct-like type: `encoded_len` and `encode_to`, the same
    /// bytes as `TSerializable` writes through `BufOutput`, with static dispatch.
    fn message_impl(
        &self,
        name: &proc_macro2::Ident,
        fields: &[FieldDef],
        shape: Shape,
    ) -> TokenStream {
        let rc = quote!(::rpc_core::codegen);
        let w = wire();
        let field_value = |f: &FieldDef| if f.boxed { quote!(&**v) } else { quote!(v) };
        let field_len = |f: &FieldDef| {
            let len = self.len_expr(&f.ty, &field_value(f), 0);
            quote!(#w::FIELD_HEADER_LEN + #len)
        };
        let field_write = |f: &FieldDef| {
            let tt = wire_type(&f.ty);
            let id = signed(i64::from(f.id), "");
            let body = self.encode_value(&f.ty, &field_value(f), 0);
            quote! {
                #w::put_field_begin(dst, #tt, #id);
                #body
            }
        };
        let (len, write) = if shape == Shape::Union {
            let variant = |f: &FieldDef| names::ident(&names::camel(&f.name));
            let lens = fields.iter().map(|f| {
                let var = variant(f);
                let len = field_len(f);
                let bind = if fixed_len(&f.ty).is_some() {
                    quote!(_)
                } else {
                    quote!(v)
                };
                quote!(Self::#var(#bind) => #len,)
            });
            let writes = fields.iter().map(|f| {
                let var = variant(f);
                let write = field_write(f);
                quote!(Self::#var(v) => { #write })
            });
            (
                quote! {
                    #w::STOP_LEN + match self {
                        #(#lens)*
                    }
                },
                quote! {
                    match self {
                        #(#writes)*
                    }
                    #w::put_stop(dst);
                },
            )
        } else {
            let lens = fields.iter().map(|f| {
                let fname = names::ident(&f.rust_name);
                let len = field_len(f);
                let fixed = fixed_len(&f.ty).is_some();
                if f.req == Requiredness::Optional && fixed {
                    quote! {
                        if self.#fname.is_some() {
                            n += #len;
                        }
                    }
                } else if f.req == Requiredness::Optional {
                    quote! {
                        if let ::core::option::Option::Some(v) = &self.#fname {
                            n += #len;
                        }
                    }
                } else if fixed {
                    quote!(n += #len;)
                } else {
                    quote! {
                        {
                            let v = &self.#fname;
                            n += #len;
                        }
                    }
                }
            });
            let writes = fields.iter().map(|f| {
                let fname = names::ident(&f.rust_name);
                let write = field_write(f);
                if f.req == Requiredness::Optional {
                    quote! {
                        if let ::core::option::Option::Some(v) = &self.#fname {
                            #write
                        }
                    }
                } else {
                    quote! {
                        {
                            let v = &self.#fname;
                            #write
                        }
                    }
                }
            });
            let len = if fields.is_empty() {
                quote!(#w::STOP_LEN)
            } else {
                quote! {
                    let mut n: usize = #w::STOP_LEN;
                    #(#lens)*
                    n
                }
            };
            (
                len,
                quote! {
                    #(#writes)*
                    #w::put_stop(dst);
                },
            )
        };
        quote! {
            impl #rc::ThriftMessage for #name {
                #[inline]
                fn encoded_len(&self) -> usize {
                    #len
                }
                #[inline]
                fn encode_to<B: #rc::bytes::BufMut + ?::core::marker::Sized>(&self, dst: &mut B) {
                    #write
                }
            }
        }
    }

    /// A `usize` expression: the encoded length of `v` (an expression of type `&T`) of type
    /// `ty`, without the field header.
    fn len_expr(&self, ty: &TypeRef, v: &TokenStream, depth: usize) -> TokenStream {
        let w = wire();
        if let Some(n) = fixed_len(ty) {
            let n = Literal::usize_unsuffixed(n);
            return quote!(#n);
        }
        match ty.resolved() {
            TypeRef::String => quote!(#w::bytes_len(#v.len())),
            TypeRef::Binary => quote!(#w::bytes_len(#v.len())),
            TypeRef::List(e) | TypeRef::Set(e) => match fixed_len(e) {
                Some(n) => {
                    let n = Literal::usize_unsuffixed(n);
                    quote!(#w::LIST_HEADER_LEN + #v.len() * #n)
                }
                None => {
                    let el = format_ident!("e{depth}");
                    let len = self.len_expr(e, &quote!(#el), depth + 1);
                    quote! {
                        #w::LIST_HEADER_LEN
                            + #v.iter().map(|#el| #len).sum::<usize>()
                    }
                }
            },
            TypeRef::Map(k, val) => match (fixed_len(k), fixed_len(val)) {
                (Some(a), Some(b)) => {
                    let n = Literal::usize_unsuffixed(a + b);
                    quote!(#w::MAP_HEADER_LEN + #v.len() * #n)
                }
                _ => {
                    let kl = format_ident!("k{depth}");
                    let vl = format_ident!("v{depth}");
                    let klen = self.len_expr(k, &quote!(#kl), depth + 1);
                    let vlen = self.len_expr(val, &quote!(#vl), depth + 1);
                    // A fixed-size side is not looked at.
                    let kp = if fixed_len(k).is_some() {
                        quote!(_)
                    } else {
                        quote!(#kl)
                    };
                    let vp = if fixed_len(val).is_some() {
                        quote!(_)
                    } else {
                        quote!(#vl)
                    };
                    quote! {
                        #w::MAP_HEADER_LEN
                            + #v.iter().map(|(#kp, #vp)| #klen + #vlen).sum::<usize>()
                    }
                }
            },
            // Structs, unions, exceptions (fixed-size kinds returned above).
            _ => quote!(::rpc_core::codegen::ThriftMessage::encoded_len(#v)),
        }
    }

    /// Statements encoding `v` (an expression of type `&T`) of type `ty` into `dst` with the
    /// `thrift_wire` helpers.
    fn encode_value(&self, ty: &TypeRef, v: &TokenStream, depth: usize) -> TokenStream {
        let w = wire();
        let bm = quote!(::rpc_core::codegen::bytes::BufMut);
        match ty.resolved() {
            TypeRef::Bool => quote!(#bm::put_u8(dst, ::core::primitive::u8::from(*#v));),
            TypeRef::I8 => quote!(#bm::put_i8(dst, *#v);),
            TypeRef::I16 => quote!(#bm::put_i16(dst, *#v);),
            TypeRef::I32 => quote!(#bm::put_i32(dst, *#v);),
            TypeRef::I64 => quote!(#bm::put_i64(dst, *#v);),
            TypeRef::Double => quote!(#bm::put_f64(dst, *#v);),
            TypeRef::String => quote!(#w::put_bytes(dst, #v.as_bytes());),
            TypeRef::Binary => quote!(#w::put_bytes(dst, #v);),
            TypeRef::Named(NamedRef {
                kind: NamedKind::Enum,
                ..
            }) => quote!(#bm::put_i32(dst, #v.0);),
            TypeRef::Named(_) | TypeRef::Rust(_) => {
                quote!(::rpc_core::codegen::ThriftMessage::encode_to(#v, dst);)
            }
            TypeRef::List(e) | TypeRef::Set(e) => {
                let el = format_ident!("e{depth}");
                let tt = wire_type(e);
                let body = self.encode_value(e, &quote!(#el), depth + 1);
                quote! {
                    #w::put_list_begin(dst, #tt, #v.len());
                    for #el in #v {
                        #body
                    }
                }
            }
            TypeRef::Map(k, val) => {
                let kl = format_ident!("k{depth}");
                let vl = format_ident!("v{depth}");
                let (kt, vt) = (wire_type(k), wire_type(val));
                let kw = self.encode_value(k, &quote!(#kl), depth + 1);
                let vw = self.encode_value(val, &quote!(#vl), depth + 1);
                quote! {
                    #w::put_map_begin(dst, #kt, #vt, #v.len());
                    for (#kl, #vl) in #v {
                        #kw
                        #vw
                    }
                }
            }
        }
    }

    /// Statements writing `v` (an expression of type `&T`) of type `ty`.
    fn write_value(&self, ty: &TypeRef, v: &TokenStream, depth: usize) -> TokenStream {
        let t = thrift();
        let too_long = protocol_error("SizeLimit", "container has more than i32::MAX elements");
        let len = quote! {
            <i32 as ::core::convert::TryFrom<usize>>::try_from(#v.len()).map_err(|_| #too_long)?
        };
        match ty.resolved() {
            TypeRef::Bool => quote!(o.write_bool(*#v)?;),
            TypeRef::I8 => quote!(o.write_i8(*#v)?;),
            TypeRef::I16 => quote!(o.write_i16(*#v)?;),
            TypeRef::I32 => quote!(o.write_i32(*#v)?;),
            TypeRef::I64 => quote!(o.write_i64(*#v)?;),
            TypeRef::Double => quote!(o.write_double(*#v)?;),
            TypeRef::String => quote!(o.write_string(#v)?;),
            TypeRef::Binary => quote!(o.write_bytes(#v)?;),
            TypeRef::Named(NamedRef {
                kind: NamedKind::Enum,
                ..
            }) => quote!(o.write_i32(#v.0)?;),
            TypeRef::Named(_) | TypeRef::Rust(_) => {
                quote!(#t::protocol::TSerializable::write_to_out_protocol(#v, o)?;)
            }
            TypeRef::List(e) | TypeRef::Set(e) => {
                let el = format_ident!("e{depth}");
                let tt = ttype(e);
                let body = self.write_value(e, &quote!(#el), depth + 1);
                let (ident, begin, end) = if matches!(ty.resolved(), TypeRef::List(_)) {
                    (
                        quote!(TListIdentifier),
                        quote!(write_list_begin),
                        quote!(write_list_end),
                    )
                } else {
                    (
                        quote!(TSetIdentifier),
                        quote!(write_set_begin),
                        quote!(write_set_end),
                    )
                };
                quote! {
                    o.#begin(&#t::protocol::#ident::new(#tt, #len))?;
                    for #el in #v {
                        #body
                    }
                    o.#end()?;
                }
            }
            TypeRef::Map(k, val) => {
                let kl = format_ident!("k{depth}");
                let vl = format_ident!("v{depth}");
                let (kt, vt) = (ttype(k), ttype(val));
                let kw = self.write_value(k, &quote!(#kl), depth + 1);
                let vw = self.write_value(val, &quote!(#vl), depth + 1);
                quote! {
                    o.write_map_begin(&#t::protocol::TMapIdentifier::new(#kt, #vt, #len))?;
                    for (#kl, #vl) in #v {
                        #kw
                        #vw
                    }
                    o.write_map_end()?;
                }
            }
        }
    }

    /// An expression reading a value of type `ty`.
    fn read_value(&self, p: &Package, ty: &TypeRef, depth: usize) -> TokenStream {
        let t = thrift();
        match ty.resolved() {
            TypeRef::Bool => quote!(i.read_bool()?),
            TypeRef::I8 => quote!(i.read_i8()?),
            TypeRef::I16 => quote!(i.read_i16()?),
            TypeRef::I32 => quote!(i.read_i32()?),
            TypeRef::I64 => quote!(i.read_i64()?),
            TypeRef::Double => quote!(i.read_double()?),
            TypeRef::String => quote!(i.read_string()?),
            TypeRef::Binary => quote!(i.read_bytes()?),
            TypeRef::Named(
                n @ NamedRef {
                    kind: NamedKind::Enum,
                    ..
                },
            ) => {
                let path = super::relative_path(&p.module, &n.module, &n.rust_name);
                quote!(#path(i.read_i32()?))
            }
            r @ (TypeRef::Named(_) | TypeRef::Rust(_)) => {
                let ty = self.rust_type(p, r);
                quote!(<#ty as #t::protocol::TSerializable>::read_from_in_protocol(i)?)
            }
            TypeRef::List(e) | TypeRef::Set(e) => {
                let is_list = matches!(ty.resolved(), TypeRef::List(_));
                let tt = ttype(e);
                let read = self.read_value(p, e, depth + 1);
                let n = format_ident!("n{depth}");
                let out = format_ident!("out{depth}");
                let (begin, end, what) = if is_list {
                    (quote!(read_list_begin), quote!(read_list_end), "list")
                } else {
                    (quote!(read_set_begin), quote!(read_set_end), "set")
                };
                let size = size_check(&n, what);
                let mismatch =
                    protocol_error("InvalidData", &format!("{what} element type mismatch"));
                let prealloc = Literal::usize_unsuffixed(MAX_PREALLOC);
                let (init, push) = if is_list {
                    (
                        quote!(::std::vec::Vec::with_capacity(::core::cmp::min(#n, #prealloc))),
                        quote!(#out.push(#read);),
                    )
                } else {
                    (
                        quote!(::std::collections::BTreeSet::new()),
                        quote!(#out.insert(#read);),
                    )
                };
                quote! {{
                    let header = i.#begin()?;
                    #size
                    if #n > 0 && header.element_type != #tt {
                        return ::core::result::Result::Err(#mismatch);
                    }
                    let mut #out = #init;
                    for _ in 0..#n {
                        #push
                    }
                    i.#end()?;
                    #out
                }}
            }
            TypeRef::Map(k, v) => {
                let (kt, vt) = (ttype(k), ttype(v));
                let kr = self.read_value(p, k, depth + 1);
                let vr = self.read_value(p, v, depth + 1);
                let n = format_ident!("n{depth}");
                let out = format_ident!("out{depth}");
                let key = format_ident!("k{depth}");
                let size = size_check(&n, "map");
                let mismatch = protocol_error("InvalidData", "map key or value type mismatch");
                quote! {{
                    let header = i.read_map_begin()?;
                    #size
                    if #n > 0
                        && (header.key_type != ::core::option::Option::Some(#kt)
                            || header.value_type != ::core::option::Option::Some(#vt))
                    {
                        return ::core::result::Result::Err(#mismatch);
                    }
                    let mut #out = ::std::collections::BTreeMap::new();
                    for _ in 0..#n {
                        let #key = #kr;
                        #out.insert(#key, #vr);
                    }
                    i.read_map_end()?;
                    #out
                }}
            }
        }
    }

    /// A runtime expression of constant `v` as a value of type `ty`.
    pub(super) fn const_expr(&self, p: &Package, ty: &TypeRef, v: &ConstValue) -> TokenStream {
        match (ty.resolved(), v) {
            (_, ConstValue::Bool(b)) => quote!(#b),
            (TypeRef::I8, ConstValue::Int(i)) => int_literal(*i, "i8"),
            (TypeRef::I16, ConstValue::Int(i)) => int_literal(*i, "i16"),
            (TypeRef::I32, ConstValue::Int(i)) => int_literal(*i, "i32"),
            (_, ConstValue::Int(i)) => int_literal(*i, "i64"),
            (_, ConstValue::Double(d)) => double_literal(*d),
            (TypeRef::Binary, ConstValue::String(s)) => {
                let b = Literal::byte_string(s.as_bytes());
                quote!(#b.to_vec())
            }
            (_, ConstValue::String(s)) => quote!(::std::string::String::from(#s)),
            (TypeRef::Named(n), ConstValue::Enum { rust_name, value }) => {
                enum_value(p, n, rust_name.as_deref(), *value)
            }
            (_, ConstValue::Enum { value, .. }) => int_literal(i64::from(*value), "i32"),
            (TypeRef::List(e), ConstValue::List(items)) => {
                let items = items.iter().map(|i| self.const_expr(p, e, i));
                quote!(::std::vec![#(#items),*])
            }
            (TypeRef::Set(e), ConstValue::List(items)) => {
                let items = items.iter().map(|i| self.const_expr(p, e, i));
                quote!(::std::collections::BTreeSet::from([#(#items),*]))
            }
            (TypeRef::Map(kt, vt), ConstValue::Map(items)) => {
                let items = items.iter().map(|(k, v)| {
                    let k = self.const_expr(p, kt, k);
                    let v = self.const_expr(p, vt, v);
                    quote!((#k, #v))
                });
                quote!(::std::collections::BTreeMap::from([#(#items),*]))
            }
            // The resolver checked every value against its type; nothing else reaches here.
            _ => quote!(::core::default::Default::default()),
        }
    }

    pub(super) fn const_def(&self, p: &Package, c: &ConstDef) -> TokenStream {
        let name = names::ident(&c.rust_name);
        let doc = doc_attrs(&c.doc, &format!("The thrift constant `{}`.", c.name));
        let ty = self.rust_type(p, &c.ty);
        match (c.ty.resolved(), &c.value) {
            (TypeRef::String, ConstValue::String(s)) => quote! {
                #doc
                pub const #name: &str = #s;
            },
            (TypeRef::Binary, ConstValue::String(s)) => {
                let b = Literal::byte_string(s.as_bytes());
                quote! {
                    #doc
                    pub const #name: &[u8] = #b;
                }
            }
            (TypeRef::List(_) | TypeRef::Set(_) | TypeRef::Map(..), _) => {
                let v = self.const_expr(p, &c.ty, &c.value);
                quote! {
                    #doc
                    pub static #name: ::std::sync::LazyLock<#ty> = ::std::sync::LazyLock::new(|| #v);
                }
            }
            _ => {
                let v = self.const_expr(p, &c.ty, &c.value);
                quote! {
                    #doc
                    pub const #name: #ty = #v;
                }
            }
        }
    }
}

/// Whether a constant's expression is a plain literal (no allocation).
fn is_cheap(v: &ConstValue) -> bool {
    matches!(
        v,
        ConstValue::Bool(_) | ConstValue::Int(_) | ConstValue::Double(_) | ConstValue::Enum { .. }
    )
}

fn req_note(req: Requiredness) -> &'static str {
    match req {
        Requiredness::Required => " (required)",
        Requiredness::Optional => " (optional)",
        Requiredness::Default => "",
    }
}

fn field_begin(f: &FieldDef) -> TokenStream {
    let t = thrift();
    let tt = ttype(&f.ty);
    let id = signed(i64::from(f.id), "");
    quote! {
        o.write_field_begin(&#t::protocol::TFieldIdentifier {
            name: ::core::option::Option::None,
            field_type: #tt,
            id: ::core::option::Option::Some(#id),
        })?;
    }
}

/// `let n = usize::try_from(header.size)?` with a negative size as an error.
fn size_check(n: &proc_macro2::Ident, what: &str) -> TokenStream {
    let negative = protocol_error("NegativeSize", &format!("negative {what} size"));
    quote! {
        let #n = <usize as ::core::convert::TryFrom<i32>>::try_from(header.size)
            .map_err(|_| #negative)?;
    }
}

fn int_literal(i: i64, suffix: &str) -> TokenStream {
    signed(i, suffix)
}

/// An integer literal with an optional type suffix; negative values as `-` and the magnitude,
/// which every Rust context (patterns, consts) accepts.
fn signed(i: i64, suffix: &str) -> TokenStream {
    let magnitude = i.unsigned_abs();
    let lit = match suffix {
        "" => Literal::u64_unsuffixed(magnitude),
        _ => format!("{magnitude}{suffix}")
            .parse::<Literal>()
            .unwrap_or_else(|_| Literal::u64_unsuffixed(magnitude)),
    };
    if i < 0 {
        quote!(-#lit)
    } else {
        quote!(#lit)
    }
}

fn double_literal(d: f64) -> TokenStream {
    if d.is_finite() {
        let lit = Literal::f64_suffixed(d);
        quote!(#lit)
    } else if d.is_nan() {
        quote!(f64::NAN)
    } else if d > 0.0 {
        quote!(f64::INFINITY)
    } else {
        quote!(f64::NEG_INFINITY)
    }
}

fn enum_value(p: &Package, n: &NamedRef, rust_name: Option<&str>, value: i32) -> TokenStream {
    let path = super::relative_path(&p.module, &n.module, &n.rust_name);
    match rust_name {
        Some(v) => {
            let v = names::ident(v);
            quote!(#path::#v)
        }
        None => {
            let lit = signed(i64::from(value), "");
            quote!(#path(#lit))
        }
    }
}

/// `struct Color(pub i32)` with a constant per value, names, conversions and a `Debug` that
/// prints the name.
fn enum_def(t: &TypeDef, values: &[EnumValue]) -> TokenStream {
    let name = names::ident(&t.rust_name);
    let doc = doc_attrs(&t.doc, &format!("The thrift enum `{}`.", t.name));
    let consts = values.iter().map(|v| {
        let c = names::ident(&v.rust_name);
        let lit = signed(i64::from(v.value), "");
        let doc = doc_attrs(&v.doc, &format!("`{}` = {}.", v.name, v.value));
        quote! {
            #doc
            pub const #c: #name = #name(#lit);
        }
    });
    // Several names may share a number; the first one is the name of that number.
    let mut seen = HashSet::new();
    let name_arms: Vec<_> = values
        .iter()
        .filter(|v| seen.insert(v.value))
        .map(|v| {
            let lit = signed(i64::from(v.value), "");
            let s = &v.name;
            quote!(#lit => ::core::option::Option::Some(#s),)
        })
        .collect();
    let from_arms = values.iter().map(|v| {
        let c = names::ident(&v.rust_name);
        let s = &v.name;
        quote!(#s => ::core::option::Option::Some(Self::#c),)
    });
    let all = values.iter().map(|v| {
        let c = names::ident(&v.rust_name);
        quote!(Self::#c)
    });
    let unknown = format!("{}({{}})", t.name);
    quote! {
        #doc
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct #name(pub i32);

        impl #name {
            #(#consts)*
            /// Every declared value, in IDL order.
            pub const VALUES: &'static [#name] = &[#(#all),*];

            /// The IDL name of this value, `None` for a number the IDL does not declare.
            pub fn name(self) -> ::core::option::Option<&'static str> {
                match self.0 {
                    #(#name_arms)*
                    _ => ::core::option::Option::None,
                }
            }

            /// The value with IDL name `name`.
            pub fn from_name(name: &str) -> ::core::option::Option<Self> {
                match name {
                    #(#from_arms)*
                    _ => ::core::option::Option::None,
                }
            }
        }

        impl ::core::fmt::Debug for #name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self.name() {
                    ::core::option::Option::Some(n) => f.write_str(n),
                    ::core::option::Option::None => ::core::write!(f, #unknown, self.0),
                }
            }
        }

        impl ::core::convert::From<i32> for #name {
            fn from(v: i32) -> Self {
                Self(v)
            }
        }

        impl ::core::convert::From<#name> for i32 {
            fn from(v: #name) -> i32 {
                v.0
            }
        }
    }
}
