//! The syntax tree of one thrift file, with spans for every name and type so that later errors
//! can point at them.

use super::lexer::Span;

#[derive(Debug, Clone, Default)]
pub(crate) struct Document {
    pub(crate) includes: Vec<Include>,
    pub(crate) namespaces: Vec<Namespace>,
    pub(crate) definitions: Vec<Definition>,
}

#[derive(Debug, Clone)]
pub(crate) struct Include {
    pub(crate) path: String,
    pub(crate) span: Span,
}

#[derive(Debug, Clone)]
pub(crate) struct Namespace {
    pub(crate) scope: String,
    pub(crate) name: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Name {
    pub(crate) text: String,
    pub(crate) span: Span,
}

#[derive(Debug, Clone)]
pub(crate) struct Annotation {
    pub(crate) key: Name,
    pub(crate) value: Option<(String, Span)>,
}

#[derive(Debug, Clone)]
pub(crate) enum Definition {
    Const(Const),
    Typedef(Typedef),
    Enum(Enum),
    Struct(StructLike),
    Service(Service),
}

#[derive(Debug, Clone)]
pub(crate) struct Const {
    pub(crate) ty: Type,
    pub(crate) name: Name,
    pub(crate) value: ConstExpr,
    pub(crate) doc: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Typedef {
    pub(crate) ty: Type,
    pub(crate) name: Name,
    pub(crate) doc: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Enum {
    pub(crate) name: Name,
    pub(crate) values: Vec<EnumValue>,
    pub(crate) doc: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct EnumValue {
    pub(crate) name: Name,
    pub(crate) value: Option<(i64, Span)>,
    pub(crate) doc: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StructKind {
    Struct,
    Union,
    Exception,
}

#[derive(Debug, Clone)]
pub(crate) struct StructLike {
    pub(crate) kind: StructKind,
    pub(crate) name: Name,
    pub(crate) fields: Vec<Field>,
    pub(crate) doc: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Req {
    Required,
    Optional,
    Default,
}

#[derive(Debug, Clone)]
pub(crate) struct Field {
    /// The id as written; `None` when the IDL leaves it out (an implicit negative id).
    pub(crate) id: Option<(i64, Span)>,
    pub(crate) req: Req,
    pub(crate) ty: Type,
    pub(crate) name: Name,
    pub(crate) default: Option<ConstExpr>,
    pub(crate) doc: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Type {
    pub(crate) kind: TypeKind,
    pub(crate) span: Span,
}

#[derive(Debug, Clone)]
pub(crate) enum TypeKind {
    Bool,
    Byte,
    I8,
    I16,
    I32,
    I64,
    Double,
    String,
    Binary,
    Uuid,
    List(Box<Type>),
    Set(Box<Type>),
    Map(Box<Type>, Box<Type>),
    Named(String),
}

#[derive(Debug, Clone)]
pub(crate) struct ConstExpr {
    pub(crate) kind: ConstKind,
    pub(crate) span: Span,
}

#[derive(Debug, Clone)]
pub(crate) enum ConstKind {
    Int(i64),
    Double(f64),
    Literal(String),
    Ident(String),
    List(Vec<ConstExpr>),
    Map(Vec<(ConstExpr, ConstExpr)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Service {
    pub(crate) name: Name,
    pub(crate) extends: Option<Name>,
    pub(crate) functions: Vec<Function>,
    pub(crate) doc: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Function {
    pub(crate) oneway: bool,
    /// `None` for `void`.
    pub(crate) ret: Option<Type>,
    pub(crate) name: Name,
    pub(crate) args: Vec<Field>,
    pub(crate) throws: Vec<Field>,
    pub(crate) annotations: Vec<Annotation>,
    pub(crate) doc: Vec<String>,
}
