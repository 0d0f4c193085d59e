//! The intermediate representation both frontends produce and the generator consumes.
//!
//! An [`Ir`] is everything one IDL file (and the files it includes or imports) defines, grouped
//! by package. Names are already Rust names (the IDL names are kept for the wire), type
//! references are resolved, and every definition knows where it came from.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::error::Location;

/// Which IDL an [`Ir`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdlKind {
    /// Apache Thrift IDL.
    Thrift,
    /// Protocol Buffers (proto3 or proto2).
    Protobuf,
}

/// One IDL file compiled with everything it includes.
#[derive(Debug, Clone)]
pub struct Ir {
    /// The IDL kind.
    pub kind: IdlKind,
    /// The file that was compiled.
    pub root: PathBuf,
    /// The Rust module path of the root file's package (empty when it has none).
    pub root_module: Vec<String>,
    /// Every package reached, sorted by module path.
    pub packages: Vec<Package>,
    /// Every file read (the root, includes, imports), for `cargo:rerun-if-changed`.
    pub files: Vec<PathBuf>,
    /// Protobuf only: the serialized `google.protobuf.FileDescriptorSet` of the root file and
    /// every file it imports, without source info (emitted as `FILE_DESCRIPTOR_SET`).
    pub file_descriptor_set: Option<Vec<u8>>,
}

/// The definitions of one package (a thrift namespace, a proto package).
#[derive(Debug, Clone, Default)]
pub struct Package {
    /// The package as it appears on the wire (`MethodDesc::package`), possibly empty.
    pub name: String,
    /// The Rust module path (`["echo"]`), empty for the root of the output.
    pub module: Vec<String>,
    /// Thrift type definitions, in IDL order.
    pub types: Vec<TypeDef>,
    /// Thrift constants, in IDL order.
    pub consts: Vec<ConstDef>,
    /// Services, in IDL order.
    pub services: Vec<ServiceDef>,
    /// Message code prost-build generated for this package (protobuf only).
    pub prost_code: Option<String>,
}

/// A named thrift type.
#[derive(Debug, Clone)]
pub struct TypeDef {
    /// The IDL name.
    pub name: String,
    /// The Rust name.
    pub rust_name: String,
    /// Documentation from the IDL's comments.
    pub doc: Vec<String>,
    /// Where it is defined.
    pub origin: Location,
    /// What it is.
    pub kind: TypeDefKind,
}

/// The kinds of thrift type definitions.
#[derive(Debug, Clone)]
pub enum TypeDefKind {
    /// `struct`.
    Struct(Vec<FieldDef>),
    /// `union`: exactly one field is set.
    Union(Vec<FieldDef>),
    /// `exception`: a struct that is also an error.
    Exception(Vec<FieldDef>),
    /// `enum`: named `i32` values.
    Enum(Vec<EnumValue>),
    /// `typedef`: another name for a type.
    Alias(TypeRef),
}

/// A field of a struct, union, exception, argument list or `throws` list.
#[derive(Debug, Clone)]
pub struct FieldDef {
    /// The field id on the wire.
    pub id: i16,
    /// The IDL name.
    pub name: String,
    /// The Rust name (snake case, raw or suffixed when it is a keyword).
    pub rust_name: String,
    /// The type.
    pub ty: TypeRef,
    /// Requiredness.
    pub req: Requiredness,
    /// The default value, if the IDL gives one.
    pub default: Option<ConstValue>,
    /// Documentation from the IDL's comments.
    pub doc: Vec<String>,
    /// Whether the field must be boxed (a struct that contains itself).
    pub boxed: bool,
    /// Where it is defined.
    pub origin: Location,
}

/// Thrift field requiredness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Requiredness {
    /// `required`: always written; reading fails when it is missing.
    Required,
    /// `optional`: an `Option`, written only when set.
    Optional,
    /// Neither: always written; a missing field reads as its default.
    Default,
}

/// A value of a thrift enum.
#[derive(Debug, Clone)]
pub struct EnumValue {
    /// The IDL name.
    pub name: String,
    /// The Rust constant name.
    pub rust_name: String,
    /// The value.
    pub value: i32,
    /// Documentation from the IDL's comments.
    pub doc: Vec<String>,
}

/// A thrift constant.
#[derive(Debug, Clone)]
pub struct ConstDef {
    /// The IDL name.
    pub name: String,
    /// The Rust name (upper snake case).
    pub rust_name: String,
    /// The type.
    pub ty: TypeRef,
    /// The value, already checked against the type.
    pub value: ConstValue,
    /// Documentation from the IDL's comments.
    pub doc: Vec<String>,
    /// Where it is defined.
    pub origin: Location,
}

/// A constant value, checked against the type it is used with.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstValue {
    /// `true`/`false` (or 0/1).
    Bool(bool),
    /// Any integer type (range-checked).
    Int(i64),
    /// `double`.
    Double(f64),
    /// `string` or `binary`.
    String(String),
    /// An enum value (by its Rust constant name and number).
    Enum {
        /// The Rust constant name of the value, when it is a declared one.
        rust_name: Option<String>,
        /// The number.
        value: i32,
    },
    /// A list or set.
    List(Vec<ConstValue>),
    /// A map.
    Map(Vec<(ConstValue, ConstValue)>),
}

/// A reference to a type.
#[derive(Debug, Clone, PartialEq)]
pub enum TypeRef {
    /// `bool`.
    Bool,
    /// `i8` / `byte`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `double`.
    Double,
    /// `string` (UTF-8).
    String,
    /// `binary`.
    Binary,
    /// `list<T>`.
    List(Box<TypeRef>),
    /// `set<T>`.
    Set(Box<TypeRef>),
    /// `map<K, V>`.
    Map(Box<TypeRef>, Box<TypeRef>),
    /// A named thrift type of the IR.
    Named(NamedRef),
    /// A Rust type path generated elsewhere (a prost message), relative to the module of the
    /// package that uses it.
    Rust(String),
}

/// A reference to a named thrift type.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedRef {
    /// The Rust module path of the package defining it.
    pub module: Vec<String>,
    /// The Rust name.
    pub rust_name: String,
    /// What it is; a typedef carries the type it stands for, resolved.
    pub kind: NamedKind,
}

/// What a [`NamedRef`] refers to.
#[derive(Debug, Clone, PartialEq)]
pub enum NamedKind {
    /// A struct.
    Struct,
    /// A union.
    Union,
    /// An exception.
    Exception,
    /// An enum.
    Enum,
    /// A typedef of the contained (resolved) type.
    Alias(Box<TypeRef>),
}

impl TypeRef {
    /// The type with typedefs replaced by what they stand for (the wire type).
    pub fn resolved(&self) -> &TypeRef {
        match self {
            TypeRef::Named(NamedRef {
                kind: NamedKind::Alias(t),
                ..
            }) => t.resolved(),
            t => t,
        }
    }

    /// Whether the type is a thrift struct, union or exception (through typedefs).
    pub fn is_struct_like(&self) -> bool {
        matches!(
            self.resolved(),
            TypeRef::Named(NamedRef {
                kind: NamedKind::Struct | NamedKind::Union | NamedKind::Exception,
                ..
            })
        )
    }
}

/// The four interaction modes (mirrors `rpc_core::Mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One request, one response.
    Unary,
    /// A stream of requests, one response.
    ClientStreaming,
    /// One request, a stream of responses.
    ServerStreaming,
    /// Streams both ways.
    Bidi,
}

/// A service.
#[derive(Debug, Clone)]
pub struct ServiceDef {
    /// The IDL name (on the wire).
    pub name: String,
    /// The Rust name of the trait (upper camel case).
    pub rust_name: String,
    /// Documentation from the IDL's comments.
    pub doc: Vec<String>,
    /// Where it is defined.
    pub origin: Location,
    /// Methods, in IDL order (a thrift service's `extends` chain first).
    pub methods: Vec<MethodDef>,
}

/// A method of a service.
#[derive(Debug, Clone)]
pub struct MethodDef {
    /// The IDL name (on the wire).
    pub name: String,
    /// The Rust name (snake case).
    pub rust_name: String,
    /// Documentation from the IDL's comments.
    pub doc: Vec<String>,
    /// Where it is defined.
    pub origin: Location,
    /// The interaction mode.
    pub mode: Mode,
    /// Arguments (exactly one for streaming methods and protobuf).
    pub args: Vec<FieldDef>,
    /// The response type; `None` for a thrift `void` method.
    pub response: Option<TypeRef>,
    /// Declared exceptions (thrift `throws`).
    pub exceptions: Vec<FieldDef>,
}

impl TypeDef {
    /// The fields of a struct, union or exception (empty for enums and typedefs).
    pub fn fields(&self) -> &[FieldDef] {
        match &self.kind {
            TypeDefKind::Struct(f) | TypeDefKind::Union(f) | TypeDefKind::Exception(f) => f,
            TypeDefKind::Enum(_) | TypeDefKind::Alias(_) => &[],
        }
    }
}

type DefKey<'a> = (&'a [String], &'a str);

fn key(n: &NamedRef) -> DefKey<'_> {
    (n.module.as_slice(), n.rust_name.as_str())
}

/// Named thrift types of an IR by module and Rust name, with the analyses the resolver and the
/// generator share.
pub(crate) struct TypeIndex<'a> {
    defs: HashMap<DefKey<'a>, &'a TypeDef>,
}

impl<'a> TypeIndex<'a> {
    pub(crate) fn new(packages: &'a [Package]) -> Self {
        TypeIndex {
            defs: packages
                .iter()
                .flat_map(|p| {
                    p.types
                        .iter()
                        .map(move |t| ((p.module.as_slice(), t.rust_name.as_str()), t))
                })
                .collect(),
        }
    }

    /// The definitions, viewed with the (shorter) lifetime of a query.
    fn defs<'b>(&'b self) -> &'b HashMap<DefKey<'b>, &'b TypeDef> {
        &self.defs
    }

    /// Whether a value of `ty` contains an `f64` anywhere (no `Eq`, `Hash`, `Ord`).
    pub(crate) fn contains_double(&self, ty: &TypeRef) -> bool {
        self.contains_double_in(ty, &mut HashSet::new())
    }

    fn contains_double_in<'b>(&'b self, ty: &'b TypeRef, seen: &mut HashSet<DefKey<'b>>) -> bool {
        match ty.resolved() {
            TypeRef::Double => true,
            TypeRef::List(t) | TypeRef::Set(t) => self.contains_double_in(t, seen),
            TypeRef::Map(k, v) => {
                self.contains_double_in(k, seen) || self.contains_double_in(v, seen)
            }
            TypeRef::Named(n) => {
                seen.insert(key(n))
                    && self.defs().get(&key(n)).is_some_and(|d| {
                        d.fields()
                            .iter()
                            .any(|f| self.contains_double_in(&f.ty, seen))
                    })
            }
            _ => false,
        }
    }

    /// Whether `ty` implements `Default` (unions do not; structs do when their fields do).
    pub(crate) fn has_default(&self, ty: &TypeRef) -> bool {
        self.has_default_in(ty, &mut HashSet::new())
    }

    fn has_default_in<'b>(&'b self, ty: &'b TypeRef, seen: &mut HashSet<DefKey<'b>>) -> bool {
        match ty.resolved() {
            TypeRef::Named(n) => match &n.kind {
                NamedKind::Union => false,
                NamedKind::Enum => true,
                // A type being checked further up: assume yes; the outer check decides.
                _ if !seen.insert(key(n)) => true,
                _ => self
                    .defs()
                    .get(&key(n))
                    .is_some_and(|d| self.fields_have_default_in(d.fields(), seen)),
            },
            _ => true,
        }
    }

    /// Whether a struct with these fields can derive or implement `Default`.
    pub(crate) fn fields_have_default(&self, fields: &[FieldDef]) -> bool {
        self.fields_have_default_in(fields, &mut HashSet::new())
    }

    fn fields_have_default_in<'b>(
        &'b self,
        fields: &'b [FieldDef],
        seen: &mut HashSet<DefKey<'b>>,
    ) -> bool {
        fields
            .iter()
            .all(|f| f.req == Requiredness::Optional || self.has_default_in(&f.ty, seen))
    }

    /// Whether the struct-like type `from` contains the type `to` through fields that are not
    /// behind a container (so a field of type `from` inside `to` needs a `Box`).
    pub(crate) fn reaches(&self, from: &NamedRef, to: DefKey<'_>) -> bool {
        self.reaches_in(key(from), to, &mut HashSet::new())
    }

    fn reaches_in<'b>(
        &'b self,
        from: DefKey<'b>,
        to: DefKey<'_>,
        seen: &mut HashSet<DefKey<'b>>,
    ) -> bool {
        if from == to {
            return true;
        }
        if !seen.insert(from) {
            return false;
        }
        self.defs().get(&from).is_some_and(|d| {
            d.fields()
                .iter()
                .filter_map(|f| f.ty.direct_struct())
                .any(|next| self.reaches_in(key(next), to, seen))
        })
    }
}

impl TypeRef {
    /// The struct, union or exception this type is (through typedefs), if it is one.
    pub(crate) fn direct_struct(&self) -> Option<&NamedRef> {
        match self.resolved() {
            TypeRef::Named(n) if self.is_struct_like() => Some(n),
            _ => None,
        }
    }
}
