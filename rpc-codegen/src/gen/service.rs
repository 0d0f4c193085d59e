//! Per service: method descriptors, the server trait, the `XxxServer<T>` adapter, the typed
//! `XxxClient`, and for thrift unary methods the Args/Result wire structs and the enum of
//! declared exceptions.
//!
//! Thrift unary methods carry the Args struct (field id = argument id) on the request and
//! the Result struct (field 0 = success, 1.. = declared exceptions) on the response (TTHeader
//! spec §2, §4); streaming methods carry the bare argument and response structs. Protobuf
//! methods carry the messages as they are.

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};

use super::thrift::Shape;
use super::{doc_attrs, shouty_ident, Cx};
use crate::ir::*;
use crate::names;

/// Type names the generator adds for a service (for collision checks).
pub(super) fn generated_names(kind: IdlKind, s: &ServiceDef) -> Vec<String> {
    let mut out = vec![
        format!("{}Client", s.rust_name),
        format!("{}Server", s.rust_name),
        s.rust_name.clone(),
        format!("{}_METHODS", names::shouty(&s.rust_name)),
        format!("{}_DESCRIPTOR", names::shouty(&s.rust_name)),
    ];
    for m in &s.methods {
        let base = format!("{}{}", s.rust_name, names::camel(&m.name));
        if kind == IdlKind::Thrift && m.mode == Mode::Unary {
            out.push(format!("{base}Args"));
            out.push(format!("{base}Result"));
        }
        if !m.exceptions.is_empty() {
            out.push(format!("{base}Exception"));
        }
    }
    out
}

/// Names of the per-method items of a service.
struct MethodNames {
    /// `ping_pong`
    call: Ident,
    /// `ping_pong_with`
    call_with: Ident,
    /// `TestServicePingPongArgs` (thrift unary)
    args: Ident,
    /// `TestServicePingPongResult` (thrift unary)
    result: Ident,
    /// `TestServicePingPongException` (methods with `throws`)
    exception: Ident,
}

fn method_names(s: &ServiceDef, m: &MethodDef) -> MethodNames {
    let base = format!("{}{}", s.rust_name, names::camel(&m.name));
    MethodNames {
        call: names::ident(&m.rust_name),
        call_with: format_ident!("{}_with", m.rust_name.trim_start_matches("r#")),
        args: format_ident!("{base}Args"),
        result: format_ident!("{base}Result"),
        exception: format_ident!("{base}Exception"),
    }
}

/// Parameter names of a method's arguments, renamed where they would clash with ours.
fn arg_idents(m: &MethodDef) -> Vec<Ident> {
    m.args
        .iter()
        .map(|a| match a.rust_name.as_str() {
            "ctx" | "stream" | "options" => format_ident!("{}_", a.rust_name),
            n => names::ident(n),
        })
        .collect()
}

/// The parameter name of a single-argument method (protobuf, streaming thrift); frontends
/// guarantee the argument, `request` stands in for a hand-built IR without one.
fn first_arg(m: &MethodDef) -> Ident {
    arg_idents(m)
        .into_iter()
        .next()
        .unwrap_or_else(|| format_ident!("request"))
}

fn rc() -> TokenStream {
    quote!(::rpc_core::codegen)
}

impl<'a> Cx<'a> {
    pub(super) fn service(&self, p: &Package, s: &ServiceDef) -> TokenStream {
        let rc = rc();
        let thrift = self.ir.kind == IdlKind::Thrift;
        let codec = if thrift {
            quote!(#rc::ThriftCodec)
        } else {
            quote!(#rc::ProstCodec)
        };
        let payload = if thrift {
            quote!(#rc::PayloadKind::Thrift)
        } else {
            quote!(#rc::PayloadKind::Protobuf)
        };
        let methods_static = shouty_ident(&s.rust_name, "METHODS");
        let desc_static = shouty_ident(&s.rust_name, "DESCRIPTOR");
        let trait_name = names::ident(&s.rust_name);
        let server = format_ident!("{}Server", s.rust_name.trim_start_matches("r#"));
        let client = format_ident!("{}Client", s.rust_name.trim_start_matches("r#"));
        let full = if p.name.is_empty() {
            s.name.clone()
        } else {
            format!("{}.{}", p.name, s.name)
        };
        let pkg = &p.name;
        let svc_name = &s.name;

        let mut items = TokenStream::new();

        // Wire structs and exception enums.
        for m in &s.methods {
            items.extend(self.method_types(p, s, m));
        }

        // Descriptors.
        let count = Literal::usize_unsuffixed(s.methods.len());
        let descs = s.methods.iter().map(|m| {
            let name = &m.name;
            let path = format!("/{full}/{}", m.name);
            let mode = mode_tokens(m.mode);
            quote! {
                #rc::MethodDesc {
                    package: #pkg,
                    service: #svc_name,
                    full_service: #full,
                    name: #name,
                    path: #path,
                    mode: #mode,
                    payload: #payload,
                }
            }
        });
        let methods_doc = format!(" The methods of `{full}`, in IDL order.");
        let desc_doc = format!(" The descriptor of `{full}`.");
        items.extend(quote! {
            #[doc = #methods_doc]
            pub static #methods_static: [#rc::MethodDesc; #count] = [#(#descs),*];
            #[doc = #desc_doc]
            pub static #desc_static: #rc::ServiceDesc = #rc::ServiceDesc {
                package: #pkg,
                name: #svc_name,
                full_name: #full,
                methods: &#methods_static,
            };
        });

        // Server trait.
        let trait_doc = doc_attrs(&s.doc, &format!("The service `{full}`."));
        let trait_methods = s.methods.iter().map(|m| self.trait_method(p, s, m));
        let serve_doc =
            format!(" Implement it and host it with [`{server}`]; call it with [`{client}`].");
        items.extend(quote! {
            #trait_doc
            #[doc = ""]
            #[doc = #serve_doc]
            pub trait #trait_name: ::core::marker::Send + ::core::marker::Sync + 'static {
                #(#trait_methods)*
            }
        });

        // Server adapter.
        let arms = s
            .methods
            .iter()
            .enumerate()
            .map(|(i, m)| self.server_arm(p, s, m, i, &codec));
        let server_doc = format!(
            " Serves a [`{trait_name}`] implementation: pass it to \
             `rpc_core::ServerBuilder::add_service`."
        );
        let unknown = format!("{full}: no method with index {{}}");
        let body = if s.methods.is_empty() {
            quote! {
                let index = call.method_index();
                ::std::boxed::Box::pin(async move {
                    ::core::result::Result::Err(#rc::Status::unimplemented(
                        ::std::format!(#unknown, index),
                    ))
                })
            }
        } else {
            quote! {
                let inner = ::core::clone::Clone::clone(&self.inner);
                ::std::boxed::Box::pin(async move {
                    match call.method_index() {
                        #(#arms)*
                        other => ::core::result::Result::Err(#rc::Status::unimplemented(
                            ::std::format!(#unknown, other),
                        )),
                    }
                })
            }
        };
        items.extend(quote! {
            #[doc = #server_doc]
            pub struct #server<T> {
                inner: #rc::Arc<T>,
            }

            impl<T> #server<T> {
                /// Wraps an implementation.
                pub fn new(inner: T) -> Self {
                    Self { inner: #rc::Arc::new(inner) }
                }

                /// Wraps an implementation that is shared with other code.
                pub fn from_arc(inner: #rc::Arc<T>) -> Self {
                    Self { inner }
                }

                /// The implementation.
                pub fn get_ref(&self) -> &T {
                    &self.inner
                }
            }

            impl<T> ::core::clone::Clone for #server<T> {
                fn clone(&self) -> Self {
                    Self { inner: ::core::clone::Clone::clone(&self.inner) }
                }
            }

            impl<T> ::core::fmt::Debug for #server<T> {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.write_str(::core::stringify!(#server))
                }
            }

            impl<T: #trait_name> #rc::Service for #server<T> {
                fn descriptor(&self) -> &'static #rc::ServiceDesc {
                    &#desc_static
                }

                fn call(
                    &self,
                    call: #rc::IncomingCall,
                ) -> #rc::BoxFuture<'static, ::core::result::Result<(), #rc::Status>> {
                    #body
                }
            }
        });

        // Client.
        let client_doc =
            format!(" A client of `{full}`: cheap to clone, one method per IDL method.");
        let client_methods = s
            .methods
            .iter()
            .enumerate()
            .map(|(i, m)| self.client_method(p, s, m, i, &codec, &methods_static));
        items.extend(quote! {
            #[doc = #client_doc]
            #[derive(Debug, Clone)]
            pub struct #client {
                inner: #rc::Client,
            }

            impl #client {
                /// A client that makes its calls through `inner` (any transport).
                pub fn new(inner: #rc::Client) -> Self {
                    Self { inner }
                }

                /// A client over a transport of type `T` made from `address` (its format is
                /// the transport's: `tcp://HOST:PORT`, `unix:///path`, ...), with default
                /// settings. The caller picks the transport with a turbofish, for example
                /// `connect::<TtHeaderClient>("tcp://127.0.0.1:8888")`; connecting is lazy,
                /// so a bad address fails here and an unreachable server fails the first call.
                /// For settings (middleware, timeouts) build the transport and the
                /// `rpc_core::Client` yourself and use [`Self::new`].
                pub fn connect<T: #rc::Connect>(
                    address: &str,
                ) -> ::core::result::Result<Self, #rc::Status> {
                    ::core::result::Result::Ok(Self::new(#rc::Client::new(
                        <T as #rc::Connect>::connect(address)?,
                    )))
                }

                /// The untyped client underneath.
                pub fn inner(&self) -> &#rc::Client {
                    &self.inner
                }

                #(#client_methods)*
            }
        });
        items
    }

    /// The Args/Result structs (thrift unary) and the exception enum (with `throws`).
    fn method_types(&self, p: &Package, s: &ServiceDef, m: &MethodDef) -> TokenStream {
        let n = method_names(s, m);
        let mut out = TokenStream::new();
        let label = format!("{}.{}", s.name, m.name);
        if !m.exceptions.is_empty() {
            let exception = &n.exception;
            let doc = format!(" The exceptions `{label}` declares.");
            let variants = m.exceptions.iter().map(|e| {
                let v = names::ident(&names::camel(&e.name));
                let ty = self.rust_type(p, &e.ty);
                let doc = doc_attrs(&e.doc, &format!("`throws ({}: {})`.", e.id, e.name));
                quote! {
                    #doc
                    #v(#ty)
                }
            });
            let display = m.exceptions.iter().map(|e| {
                let v = names::ident(&names::camel(&e.name));
                quote!(Self::#v(e) => ::core::fmt::Display::fmt(e, f),)
            });
            out.extend(quote! {
                #[doc = #doc]
                #[derive(Debug, Clone, PartialEq)]
                pub enum #exception {
                    #(#variants,)*
                }

                impl ::core::fmt::Display for #exception {
                    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                        match self {
                            #(#display)*
                        }
                    }
                }

                impl ::std::error::Error for #exception {}
            });
        }
        if self.ir.kind != IdlKind::Thrift || m.mode != Mode::Unary {
            return out;
        }
        let args_doc = doc_attrs(
            &[],
            &format!("The arguments of `{label}` as they travel on the wire (the request)."),
        );
        let args_name = n.args.to_string();
        out.extend(self.struct_like(p, &args_doc, &args_name, &args_name, &m.args, Shape::Struct));
        let mut fields: Vec<FieldDef> = Vec::with_capacity(m.exceptions.len() + 1);
        if let Some(r) = &m.response {
            fields.push(FieldDef {
                id: 0,
                name: "success".into(),
                rust_name: "success".into(),
                ty: r.clone(),
                req: Requiredness::Optional,
                default: None,
                doc: vec!["The return value.".into()],
                boxed: false,
                origin: m.origin.clone(),
            });
        }
        fields.extend(m.exceptions.iter().cloned());
        let result_doc = doc_attrs(
            &[],
            &format!(
                "The outcome of `{label}` as it travels on the wire (the response): the return \
                 value or one declared exception."
            ),
        );
        let result_name = n.result.to_string();
        out.extend(self.struct_like(
            p,
            &result_doc,
            &result_name,
            &result_name,
            &fields,
            Shape::Struct,
        ));
        out
    }

    /// A unary argument's type as the Args struct holds it (`Option` when optional).
    fn arg_type(&self, p: &Package, a: &FieldDef) -> TokenStream {
        let ty = self.rust_type(p, &a.ty);
        if a.req == Requiredness::Optional {
            quote!(::core::option::Option<#ty>)
        } else {
            ty
        }
    }

    fn response_type(&self, p: &Package, m: &MethodDef) -> TokenStream {
        match &m.response {
            Some(r) => self.rust_type(p, r),
            None => quote!(()),
        }
    }

    fn request_type(&self, p: &Package, m: &MethodDef) -> TokenStream {
        m.args
            .first()
            .map_or_else(|| quote!(()), |a| self.rust_type(p, &a.ty))
    }

    /// The error type of a unary method: `MethodError<Exception>` with `throws`, else
    /// `Status`.
    fn unary_error(&self, s: &ServiceDef, m: &MethodDef) -> TokenStream {
        let rc = rc();
        if m.exceptions.is_empty() {
            quote!(#rc::Status)
        } else {
            let e = method_names(s, m).exception;
            quote!(#rc::MethodError<#e>)
        }
    }

    fn trait_method(&self, p: &Package, s: &ServiceDef, m: &MethodDef) -> TokenStream {
        let rc = rc();
        let n = method_names(s, m);
        let call = &n.call;
        let doc = doc_attrs(&m.doc, &format!("`{}` ({}).", m.name, mode_name(m.mode)));
        let req = self.request_type(p, m);
        let res = self.response_type(p, m);
        let status = quote!(#rc::Status);
        let (params, output) = match m.mode {
            Mode::Unary => {
                let names = arg_idents(m);
                let types = m.args.iter().map(|a| self.arg_type(p, a));
                let err = self.unary_error(s, m);
                (
                    quote!(#(#names: #types),*),
                    quote!(::core::result::Result<#res, #err>),
                )
            }
            Mode::ClientStreaming => (
                quote!(stream: #rc::ClientStreamingServer<#req>),
                quote!(::core::result::Result<#res, #status>),
            ),
            Mode::ServerStreaming => {
                let arg = &first_arg(m);
                (
                    quote!(#arg: #req, stream: #rc::ServerStreamingServer<#res>),
                    quote!(::core::result::Result<(), #status>),
                )
            }
            Mode::Bidi => (
                quote!(stream: #rc::BidiStreamingServer<#req, #res>),
                quote!(::core::result::Result<(), #status>),
            ),
        };
        quote! {
            #doc
            fn #call(
                &self,
                ctx: #rc::ServerContext,
                #params
            ) -> impl ::core::future::Future<Output = #output> + ::core::marker::Send;
        }
    }

    fn server_arm(
        &self,
        p: &Package,
        s: &ServiceDef,
        m: &MethodDef,
        index: usize,
        codec: &TokenStream,
    ) -> TokenStream {
        let rc = rc();
        let n = method_names(s, m);
        let call = &n.call;
        let i = Literal::usize_unsuffixed(index);
        // Inside `impl<T: Trait> Service for XxxServer<T>`: an IDL type named `T` is `self::T`.
        let req = m
            .args
            .first()
            .map_or_else(|| quote!(()), |a| self.rust_type_qualified(p, &a.ty));
        let res = m
            .response
            .as_ref()
            .map_or_else(|| quote!(()), |r| self.rust_type_qualified(p, r));
        let thrift = self.ir.kind == IdlKind::Thrift;
        let body = match m.mode {
            Mode::Unary if thrift => {
                let (args, result) = (&n.args, &n.result);
                let fields = m.args.iter().map(|a| names::ident(&a.rust_name));
                let has_success = m.response.is_some();
                let success = if has_success {
                    quote!(success: ::core::option::Option::Some(success),)
                } else {
                    quote!()
                };
                let none_of = |skip: Option<usize>| {
                    let mut inits = Vec::new();
                    if has_success && skip.is_some() {
                        inits.push(quote!(success: ::core::option::Option::None,));
                    }
                    for (j, e) in m.exceptions.iter().enumerate() {
                        if Some(j) != skip {
                            let f = names::ident(&e.rust_name);
                            inits.push(quote!(#f: ::core::option::Option::None,));
                        }
                    }
                    inits
                };
                let ok_inits = none_of(None);
                let ok_value = if has_success {
                    quote!(success)
                } else {
                    quote!(())
                };
                let on_ok = quote! {
                    ::core::result::Result::Ok(#ok_value) => ::core::result::Result::Ok(#result {
                        #success
                        #(#ok_inits)*
                    }),
                };
                let outcome = if m.exceptions.is_empty() {
                    quote! {
                        match inner.#call(ctx, #(args.#fields),*).await {
                            #on_ok
                            ::core::result::Result::Err(status) => ::core::result::Result::Err(status),
                        }
                    }
                } else {
                    let exception = &n.exception;
                    let declared = m.exceptions.iter().enumerate().map(|(j, e)| {
                        let v = names::ident(&names::camel(&e.name));
                        let f = names::ident(&e.rust_name);
                        let others = none_of(Some(j));
                        quote! {
                            ::core::result::Result::Err(#rc::MethodError::Declared(#exception::#v(e))) => {
                                ::core::result::Result::Ok(#result {
                                    #f: ::core::option::Option::Some(e),
                                    #(#others)*
                                })
                            }
                        }
                    });
                    quote! {
                        match inner.#call(ctx, #(args.#fields),*).await {
                            #on_ok
                            #(#declared)*
                            ::core::result::Result::Err(#rc::MethodError::Status(status)) => {
                                ::core::result::Result::Err(status)
                            }
                        }
                    }
                };
                let args_param = if m.args.is_empty() {
                    quote!(_args)
                } else {
                    quote!(args)
                };
                quote! {
                    call.unary::<#codec, #args, #result, _, _>(move |ctx, #args_param| async move {
                        #outcome
                    })
                    .await
                }
            }
            Mode::Unary => quote! {
                call.unary::<#codec, #req, #res, _, _>(move |ctx, request| async move {
                    inner.#call(ctx, request).await
                })
                .await
            },
            Mode::ClientStreaming => quote! {
                call.client_streaming::<#codec, #req, #res, _, _>(move |ctx, stream| async move {
                    inner.#call(ctx, stream).await
                })
                .await
            },
            Mode::ServerStreaming => quote! {
                call.server_streaming::<#codec, #req, #res, _, _>(move |ctx, request, stream| async move {
                    inner.#call(ctx, request, stream).await
                })
                .await
            },
            Mode::Bidi => quote! {
                call.bidi::<#codec, #req, #res, _, _>(move |ctx, stream| async move {
                    inner.#call(ctx, stream).await
                })
                .await
            },
        };
        quote!(#i => #body,)
    }

    fn client_method(
        &self,
        p: &Package,
        s: &ServiceDef,
        m: &MethodDef,
        index: usize,
        codec: &TokenStream,
        methods_static: &Ident,
    ) -> TokenStream {
        let rc = rc();
        let n = method_names(s, m);
        let (call, call_with) = (&n.call, &n.call_with);
        let i = Literal::usize_unsuffixed(index);
        let desc = quote!(&#methods_static[#i]);
        let req = self.request_type(p, m);
        let res = self.response_type(p, m);
        let status = quote!(#rc::Status);
        let doc = doc_attrs(
            &m.doc,
            &format!("Calls `{}` ({}).", m.name, mode_name(m.mode)),
        );
        let with_doc = format!(" As [`Self::{call}`], with per-call options (timeout, metadata).");
        let thrift = self.ir.kind == IdlKind::Thrift;
        match m.mode {
            Mode::Unary => {
                let with_doc = format!(
                    " As [`Self::{call}`], with per-call options (timeout, metadata); the response \
                     comes with its header and trailer metadata."
                );
                let arg_names = arg_idents(m);
                let arg_types: Vec<_> = m.args.iter().map(|a| self.arg_type(p, a)).collect();
                let err = self.unary_error(s, m);
                let body = if thrift {
                    let (args, result) = (&n.args, &n.result);
                    let inits = m.args.iter().zip(&arg_names).map(|(a, arg)| {
                        let field = names::ident(&a.rust_name);
                        if field == *arg {
                            quote!(#field)
                        } else {
                            quote!(#field: #arg)
                        }
                    });
                    let success = if m.response.is_some() {
                        quote! {
                            if let ::core::option::Option::Some(success) = result.success {
                                return ::core::result::Result::Ok(#rc::WithMetadata::new(header, success, trailer));
                            }
                        }
                    } else {
                        quote!()
                    };
                    let declared = m.exceptions.iter().map(|e| {
                        let v = names::ident(&names::camel(&e.name));
                        let f = names::ident(&e.rust_name);
                        let exception = &n.exception;
                        quote! {
                            if let ::core::option::Option::Some(e) = result.#f {
                                return ::core::result::Result::Err(#rc::MethodError::Declared(#exception::#v(e)));
                            }
                        }
                    });
                    let end = if m.response.is_some() {
                        let missing = format!("{}.{}: the reply has no result", s.name, m.name);
                        let status = quote!(#rc::Status::internal(#missing));
                        if m.exceptions.is_empty() {
                            quote!(::core::result::Result::Err(#status))
                        } else {
                            quote!(::core::result::Result::Err(#rc::MethodError::Status(#status)))
                        }
                    } else {
                        quote!(::core::result::Result::Ok(#rc::WithMetadata::new(header, (), trailer)))
                    };
                    let result_binding = if m.response.is_none() && m.exceptions.is_empty() {
                        quote!(_)
                    } else {
                        quote!(result)
                    };
                    quote! {
                        let (header, #result_binding, trailer) = self
                            .inner
                            .unary::<#codec, #args, #result>(
                                #desc,
                                #args { #(#inits),* },
                                options,
                            )
                            .await?
                            .into_parts();
                        #success
                        #(#declared)*
                        #end
                    }
                } else {
                    let arg = &first_arg(m);
                    quote! {
                        self.inner
                            .unary::<#codec, #req, #res>(#desc, #arg, options)
                            .await
                    }
                };
                let arg_names2 = arg_names.clone();
                let arg_types2 = arg_types.clone();
                quote! {
                    #doc
                    pub async fn #call(&self, #(#arg_names: #arg_types),*) -> ::core::result::Result<#res, #err> {
                        self.#call_with(#(#arg_names2,)* #rc::CallOptions::new())
                            .await
                            .map(#rc::WithMetadata::into_inner)
                    }

                    #[doc = #with_doc]
                    pub async fn #call_with(
                        &self,
                        #(#arg_names: #arg_types2,)*
                        options: #rc::CallOptions,
                    ) -> ::core::result::Result<#rc::WithMetadata<#res>, #err> {
                        #body
                    }
                }
            }
            Mode::ClientStreaming => quote! {
                #doc
                pub async fn #call(&self) -> ::core::result::Result<#rc::ClientStreamingClient<#req, #res>, #status> {
                    self.#call_with(#rc::CallOptions::new()).await
                }

                #[doc = #with_doc]
                pub async fn #call_with(
                    &self,
                    options: #rc::CallOptions,
                ) -> ::core::result::Result<#rc::ClientStreamingClient<#req, #res>, #status> {
                    self.inner.client_streaming::<#codec, #req, #res>(#desc, options).await
                }
            },
            Mode::ServerStreaming => {
                let arg = &first_arg(m);
                quote! {
                    #doc
                    pub async fn #call(&self, #arg: #req) -> ::core::result::Result<#rc::ServerStreamingClient<#res>, #status> {
                        self.#call_with(#arg, #rc::CallOptions::new()).await
                    }

                    #[doc = #with_doc]
                    pub async fn #call_with(
                        &self,
                        #arg: #req,
                        options: #rc::CallOptions,
                    ) -> ::core::result::Result<#rc::ServerStreamingClient<#res>, #status> {
                        self.inner.server_streaming::<#codec, #req, #res>(#desc, #arg, options).await
                    }
                }
            }
            Mode::Bidi => quote! {
                #doc
                pub async fn #call(&self) -> ::core::result::Result<#rc::BidiStreamingClient<#req, #res>, #status> {
                    self.#call_with(#rc::CallOptions::new()).await
                }

                #[doc = #with_doc]
                pub async fn #call_with(
                    &self,
                    options: #rc::CallOptions,
                ) -> ::core::result::Result<#rc::BidiStreamingClient<#req, #res>, #status> {
                    self.inner.bidi::<#codec, #req, #res>(#desc, options).await
                }
            },
        }
    }
}

fn mode_tokens(mode: Mode) -> TokenStream {
    let rc = rc();
    match mode {
        Mode::Unary => quote!(#rc::Mode::Unary),
        Mode::ClientStreaming => quote!(#rc::Mode::ClientStreaming),
        Mode::ServerStreaming => quote!(#rc::Mode::ServerStreaming),
        Mode::Bidi => quote!(#rc::Mode::Bidi),
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Unary => "unary",
        Mode::ClientStreaming => "client streaming",
        Mode::ServerStreaming => "server streaming",
        Mode::Bidi => "bidirectional streaming",
    }
}
