//! A recursive-descent parser for the Apache Thrift IDL grammar
//! (<https://thrift.apache.org/docs/idl>), keeping spans and doc comments.
//!
//! Comments directly above a definition, field, enum value or method (no token in between,
//! not trailing the previous line's token) and a comment trailing its last line become its docs.

use super::ast::*;
use super::lexer::{lex, Comment, Span, Tok, Token};
use crate::error::IdlErrorKind;

type PResult<T> = Result<T, (usize, IdlErrorKind)>;

/// Parses one thrift file. Errors carry the byte offset they point at.
pub(crate) fn parse(src: &str) -> PResult<Document> {
    let (tokens, comments) = lex(src)?;
    let mut p = Parser {
        tokens,
        comments,
        pos: 0,
    };
    p.document()
}

struct Parser {
    tokens: Vec<Token>,
    comments: Vec<Comment>,
    pos: usize,
}

impl Parser {
    fn tok(&self) -> &Tok {
        self.tok_at(0)
    }

    fn tok_at(&self, ahead: usize) -> &Tok {
        // The token list always ends with Eof; stay on it.
        let i = (self.pos + ahead).min(self.tokens.len().saturating_sub(1));
        &self.tokens[i].tok
    }

    fn span(&self) -> Span {
        self.tokens
            .get(self.pos)
            .map_or(Span::default(), |t| t.span)
    }

    fn bump(&mut self) -> Token {
        let t = self.tokens[self.pos.min(self.tokens.len() - 1)].clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.tok(), Tok::Ident(s) if s == kw)
    }

    fn is_punct(&self, c: char) -> bool {
        *self.tok() == Tok::Punct(c)
    }

    fn err<T>(&self, expected: &str) -> PResult<T> {
        Err((
            self.span().start,
            IdlErrorKind::Syntax {
                expected: expected.to_owned(),
                found: self.tok().to_string(),
            },
        ))
    }

    fn expect_punct(&mut self, c: char) -> PResult<Span> {
        if self.is_punct(c) {
            Ok(self.bump().span)
        } else {
            self.err(&format!("`{c}`"))
        }
    }

    fn name(&mut self, what: &str) -> PResult<Name> {
        match self.tok().clone() {
            Tok::Ident(text) => {
                let span = self.bump().span;
                Ok(Name { text, span })
            }
            _ => self.err(what),
        }
    }

    fn literal(&mut self, what: &str) -> PResult<(String, Span)> {
        match self.tok().clone() {
            Tok::Literal(s) => Ok((s, self.bump().span)),
            _ => self.err(what),
        }
    }

    fn eat_separator(&mut self) {
        if self.is_punct(',') || self.is_punct(';') {
            self.bump();
        }
    }

    /// Docs for the construct starting at token `first` and ending at token `last`
    /// (inclusive): the comment block right above it, then a comment trailing its last line.
    fn docs(&self, first: usize, last: usize) -> Vec<String> {
        let mut out = Vec::new();
        let start = self.tokens[first].span.start;
        let (prev_end, prev_line) = match first.checked_sub(1) {
            Some(i) => (self.tokens[i].span.end, Some(self.tokens[i].line)),
            None => (0, None),
        };
        for c in &self.comments {
            if c.span.start >= prev_end && c.span.end <= start && Some(c.line) != prev_line {
                out.push(c.text.clone());
            }
        }
        let last_tok = &self.tokens[last];
        let next_start = self
            .tokens
            .get(last + 1)
            .map_or(usize::MAX, |t| t.span.start);
        for c in &self.comments {
            if c.span.start >= last_tok.span.end
                && c.span.start < next_start
                && c.line == last_tok.line
            {
                out.push(c.text.clone());
            }
        }
        out.retain(|s| !s.is_empty());
        out
    }

    fn document(&mut self) -> PResult<Document> {
        let mut doc = Document::default();
        loop {
            let first = self.pos;
            let Tok::Ident(kw) = self.tok().clone() else {
                if *self.tok() == Tok::Eof {
                    return Ok(doc);
                }
                return self.err("a definition (struct, enum, service, ...)");
            };
            match kw.as_str() {
                "include" => {
                    self.bump();
                    let (path, span) = self.literal("the quoted path of the included file")?;
                    doc.includes.push(Include { path, span });
                }
                "cpp_include" => {
                    self.bump();
                    self.literal("a quoted path")?;
                }
                "namespace" => {
                    self.bump();
                    let scope = if self.is_punct('*') {
                        self.bump();
                        "*".to_owned()
                    } else {
                        self.name("a namespace scope (rs, go, ...)")?.text
                    };
                    let name = match self.tok().clone() {
                        Tok::Literal(s) => {
                            self.bump();
                            s
                        }
                        _ => self.name("a namespace")?.text,
                    };
                    self.annotations()?;
                    doc.namespaces.push(Namespace { scope, name });
                }
                "const" => {
                    self.bump();
                    let ty = self.ty()?;
                    let name = self.name("the constant's name")?;
                    self.expect_punct('=')?;
                    let value = self.const_value()?;
                    self.eat_separator();
                    let last = self.pos - 1;
                    let d = self.docs(first, last);
                    doc.definitions.push(Definition::Const(Const {
                        ty,
                        name,
                        value,
                        doc: d,
                    }));
                    continue;
                }
                "typedef" => {
                    self.bump();
                    let ty = self.ty()?;
                    let name = self.name("the typedef's name")?;
                    self.annotations()?;
                    self.eat_separator();
                    let last = self.pos - 1;
                    let d = self.docs(first, last);
                    doc.definitions
                        .push(Definition::Typedef(Typedef { ty, name, doc: d }));
                    continue;
                }
                "enum" => {
                    let e = self.enum_def(first)?;
                    doc.definitions.push(Definition::Enum(e));
                }
                "struct" | "union" | "exception" => {
                    let kind = match kw.as_str() {
                        "struct" => StructKind::Struct,
                        "union" => StructKind::Union,
                        _ => StructKind::Exception,
                    };
                    let s = self.struct_def(first, kind)?;
                    doc.definitions.push(Definition::Struct(s));
                }
                "service" => {
                    let s = self.service(first)?;
                    doc.definitions.push(Definition::Service(s));
                }
                "senum" => {
                    return Err((
                        self.span().start,
                        IdlErrorKind::Unsupported("`senum` (deprecated)".into()),
                    ))
                }
                _ => return self.err("a definition (struct, enum, service, ...)"),
            }
            self.eat_separator();
        }
    }

    fn annotations(&mut self) -> PResult<Vec<Annotation>> {
        let mut out = Vec::new();
        if !self.is_punct('(') {
            return Ok(out);
        }
        self.bump();
        while !self.is_punct(')') {
            let key = self.name("an annotation name or `)`")?;
            let value = if self.is_punct('=') {
                self.bump();
                Some(self.literal("a quoted annotation value")?)
            } else {
                None
            };
            out.push(Annotation { key, value });
            self.eat_separator();
        }
        self.bump();
        Ok(out)
    }

    fn ty(&mut self) -> PResult<Type> {
        let start = self.span();
        let Tok::Ident(name) = self.tok().clone() else {
            return self.err("a type");
        };
        self.bump();
        let kind = match name.as_str() {
            "bool" => TypeKind::Bool,
            "byte" => TypeKind::Byte,
            "i8" => TypeKind::I8,
            "i16" => TypeKind::I16,
            "i32" => TypeKind::I32,
            "i64" => TypeKind::I64,
            "double" => TypeKind::Double,
            "string" => TypeKind::String,
            "binary" => TypeKind::Binary,
            "uuid" => TypeKind::Uuid,
            "list" => {
                self.expect_punct('<')?;
                let t = self.ty()?;
                self.expect_punct('>')?;
                self.cpp_type()?;
                TypeKind::List(Box::new(t))
            }
            "set" => {
                self.cpp_type()?;
                self.expect_punct('<')?;
                let t = self.ty()?;
                self.expect_punct('>')?;
                TypeKind::Set(Box::new(t))
            }
            "map" => {
                self.cpp_type()?;
                self.expect_punct('<')?;
                let k = self.ty()?;
                self.expect_punct(',')?;
                let v = self.ty()?;
                self.expect_punct('>')?;
                TypeKind::Map(Box::new(k), Box::new(v))
            }
            "void" => {
                return Err((
                    start.start,
                    IdlErrorKind::Invalid("`void` is only allowed as a method's result".into()),
                ))
            }
            _ => TypeKind::Named(name),
        };
        let end = self.tokens[self.pos - 1].span.end;
        self.annotations()?;
        Ok(Type {
            kind,
            span: Span {
                start: start.start,
                end,
            },
        })
    }

    fn cpp_type(&mut self) -> PResult<()> {
        if self.is_kw("cpp_type") {
            self.bump();
            self.literal("a quoted C++ type")?;
        }
        Ok(())
    }

    fn const_value(&mut self) -> PResult<ConstExpr> {
        let span = self.span();
        let kind = match self.tok().clone() {
            Tok::Int(i) => {
                self.bump();
                ConstKind::Int(i)
            }
            Tok::Double(d) => {
                self.bump();
                ConstKind::Double(d)
            }
            Tok::Literal(s) => {
                self.bump();
                ConstKind::Literal(s)
            }
            Tok::Ident(s) => {
                self.bump();
                ConstKind::Ident(s)
            }
            Tok::Punct('[') => {
                self.bump();
                let mut items = Vec::new();
                while !self.is_punct(']') {
                    items.push(self.const_value()?);
                    self.eat_separator();
                }
                self.bump();
                ConstKind::List(items)
            }
            Tok::Punct('{') => {
                self.bump();
                let mut items = Vec::new();
                while !self.is_punct('}') {
                    let k = self.const_value()?;
                    self.expect_punct(':')?;
                    let v = self.const_value()?;
                    items.push((k, v));
                    self.eat_separator();
                }
                self.bump();
                ConstKind::Map(items)
            }
            _ => return self.err("a constant value"),
        };
        let end = self.tokens[self.pos - 1].span.end;
        Ok(ConstExpr {
            kind,
            span: Span {
                start: span.start,
                end,
            },
        })
    }

    fn enum_def(&mut self, first: usize) -> PResult<Enum> {
        self.bump();
        let name = self.name("the enum's name")?;
        let header_end = self.pos - 1;
        self.expect_punct('{')?;
        let mut values = Vec::new();
        while !self.is_punct('}') {
            let vfirst = self.pos;
            let vname = self.name("an enum value name or `}`")?;
            let value = if self.is_punct('=') {
                self.bump();
                let span = self.span();
                match *self.tok() {
                    Tok::Int(i) => {
                        self.bump();
                        Some((i, span))
                    }
                    _ => return self.err("an integer"),
                }
            } else {
                None
            };
            self.annotations()?;
            self.eat_separator();
            let last = self.pos - 1;
            values.push(EnumValue {
                name: vname,
                value,
                doc: self.docs(vfirst, last),
            });
        }
        self.bump();
        self.annotations()?;
        Ok(Enum {
            name,
            values,
            doc: self.docs(first, header_end),
        })
    }

    fn struct_def(&mut self, first: usize, kind: StructKind) -> PResult<StructLike> {
        self.bump();
        let name = self.name("a name")?;
        let header_end = self.pos - 1;
        if self.is_kw("xsd_all") {
            self.bump();
        }
        self.expect_punct('{')?;
        let fields = self.fields('}')?;
        self.annotations()?;
        Ok(StructLike {
            kind,
            name,
            fields,
            doc: self.docs(first, header_end),
        })
    }

    /// Fields up to and including the closing `close` punctuation.
    fn fields(&mut self, close: char) -> PResult<Vec<Field>> {
        let mut out = Vec::new();
        while !self.is_punct(close) {
            out.push(self.field(close)?);
        }
        self.bump();
        Ok(out)
    }

    fn field(&mut self, close: char) -> PResult<Field> {
        let first = self.pos;
        let id = match (self.tok().clone(), self.tok_at(1)) {
            (Tok::Int(i), Tok::Punct(':')) => {
                let span = self.bump().span;
                self.bump();
                Some((i, span))
            }
            (Tok::Int(_), _) => return self.err("`:` after the field id"),
            (Tok::Ident(_), _) => None,
            _ => return self.err(&format!("a field or `{close}`")),
        };
        let req = if self.is_kw("required") {
            self.bump();
            Req::Required
        } else if self.is_kw("optional") {
            self.bump();
            Req::Optional
        } else {
            Req::Default
        };
        let ty = self.ty()?;
        let name = self.name("the field's name")?;
        let default = if self.is_punct('=') {
            self.bump();
            Some(self.const_value()?)
        } else {
            None
        };
        while self.is_kw("xsd_optional") || self.is_kw("xsd_nillable") {
            self.bump();
        }
        self.annotations()?;
        self.eat_separator();
        let last = self.pos - 1;
        Ok(Field {
            id,
            req,
            ty,
            name,
            default,
            doc: self.docs(first, last),
        })
    }

    fn service(&mut self, first: usize) -> PResult<Service> {
        self.bump();
        let name = self.name("the service's name")?;
        let extends = if self.is_kw("extends") {
            self.bump();
            Some(self.name("the extended service's name")?)
        } else {
            None
        };
        let header_end = self.pos - 1;
        self.expect_punct('{')?;
        let mut functions = Vec::new();
        while !self.is_punct('}') {
            functions.push(self.function()?);
        }
        self.bump();
        self.annotations()?;
        Ok(Service {
            name,
            extends,
            functions,
            doc: self.docs(first, header_end),
        })
    }

    fn function(&mut self) -> PResult<Function> {
        let first = self.pos;
        let oneway = if self.is_kw("oneway") {
            self.bump();
            true
        } else {
            false
        };
        let ret = if self.is_kw("void") {
            self.bump();
            None
        } else if matches!(self.tok(), Tok::Ident(_)) {
            Some(self.ty()?)
        } else {
            return self.err("a method or `}`");
        };
        let name = self.name("the method's name")?;
        self.expect_punct('(')?;
        let args = self.fields(')')?;
        let throws = if self.is_kw("throws") {
            self.bump();
            self.expect_punct('(')?;
            self.fields(')')?
        } else {
            Vec::new()
        };
        let annotations = self.annotations()?;
        self.eat_separator();
        let last = self.pos - 1;
        Ok(Function {
            oneway,
            ret,
            name,
            args,
            throws,
            annotations,
            doc: self.docs(first, last),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECHO: &str = r#"
namespace go echo
namespace rs echo

struct Request {
    1: required string message,
    2: optional i32 repeat,     // how many
}

/// The error.
exception EchoError {
    1: required string reason,
}

service TestService {
    Response PingPong(1: Request req) throws (1: EchoError err),
    Response Echo(1: Request req) (streaming.mode="bidirectional"),
}
"#;

    #[test]
    fn parses_echo() {
        let doc = parse(ECHO).unwrap();
        assert_eq!(doc.namespaces.len(), 2);
        assert_eq!(doc.definitions.len(), 3);
        let Definition::Struct(req) = &doc.definitions[0] else {
            panic!()
        };
        assert_eq!(req.fields.len(), 2);
        assert_eq!(req.fields[1].doc, vec!["how many".to_owned()]);
        assert!(req.fields[0].doc.is_empty());
        let Definition::Struct(exc) = &doc.definitions[1] else {
            panic!()
        };
        assert_eq!(exc.kind, StructKind::Exception);
        assert_eq!(exc.doc, vec!["The error.".to_owned()]);
        let Definition::Service(svc) = &doc.definitions[2] else {
            panic!()
        };
        assert_eq!(svc.functions.len(), 2);
        assert_eq!(svc.functions[0].throws.len(), 1);
        let ann = &svc.functions[1].annotations[0];
        assert_eq!(ann.key.text, "streaming.mode");
        assert_eq!(ann.value.as_ref().unwrap().0, "bidirectional");
    }

    #[test]
    fn parses_everything_else() {
        let src = r#"
include "base.thrift"
cpp_include "x.h"
namespace * all
namespace rs a.b (foo = "bar")
typedef map<string, list<i64>> (x = "y") Index;
const list<i32> L = [1, 2; 3]
const map<string, i32> M = {"a": 1, 'b': 2}
const double D = -1.5e2
enum Color { RED = 1, GREEN, BLUE = 0x10 (x.y = "z") }
union U { 1: i32 a; 2: string b }
struct S xsd_all {
  1: required Color c = Color.RED,
  i32 implicit,
  3: set<binary> s,
  4: base.Thing t (go.tag = 'json:"t"'),
} (annotated)
service Child extends base.Parent {
  oneway void fire(1: i32 x),
  void nothing(),
}
"#;
        let doc = parse(src).unwrap();
        assert_eq!(doc.includes[0].path, "base.thrift");
        assert_eq!(doc.namespaces.len(), 2);
        assert_eq!(doc.definitions.len(), 8);
    }

    #[test]
    fn syntax_errors_point_at_the_token() {
        let (off, kind) = parse("struct A {\n  1: i32\n}").unwrap_err();
        assert_eq!(off, 20);
        assert!(matches!(kind, IdlErrorKind::Syntax { .. }), "{kind}");
        let (_, kind) = parse("service S { Response }").unwrap_err();
        assert_eq!(
            kind.to_string(),
            "syntax error: expected the method's name, found `}`"
        );
        assert!(parse("struct A { 1 i32 x }").is_err());
        assert!(parse("enum E { A = x }").is_err());
        assert!(parse("const i32 X").is_err());
        assert!(parse("blah").is_err());
    }
}
