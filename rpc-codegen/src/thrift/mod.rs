//! The thrift frontend: reads a `.thrift` file and its includes, resolves names, checks the
//! semantics, and produces the [`Ir`]. The rules (includes, namespaces, `streaming.mode`,
//! requiredness) and why the parser is hand-written are in the crate docs, "Thrift frontend".

mod ast;
mod lexer;
mod parser;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use self::ast::{ConstExpr, ConstKind, Definition, Document, StructKind, TypeKind};
use self::lexer::Span;
use crate::error::{Error, IdlError, IdlErrorKind, LineIndex, Location};
use crate::ir::*;
use crate::names;

/// Compiles `root` and everything it includes into one [`Ir`].
pub(crate) fn load(root: &Path, include_dirs: &[PathBuf]) -> Result<Ir, Error> {
    let mut loader = Loader {
        include_dirs,
        files: Vec::new(),
        by_path: HashMap::new(),
    };
    loader.load(root.to_path_buf(), None)?;
    Resolver::new(&loader.files).run()
}

struct SourceFile {
    path: PathBuf,
    text: String,
    lines: LineIndex,
    doc: Document,
    /// Include stem (`base` for `include "x/base.thrift"`) → file index.
    includes: HashMap<String, usize>,
    module: Vec<String>,
    package: String,
}

impl SourceFile {
    fn loc(&self, span: Span) -> Location {
        let (line, column) = self.lines.position(&self.text, span.start);
        Location {
            file: self.path.clone(),
            line,
            column,
        }
    }

    fn err(&self, span: Span, kind: IdlErrorKind) -> Error {
        Error::Idl(IdlError {
            location: self.loc(span),
            kind,
        })
    }
}

struct Loader<'a> {
    include_dirs: &'a [PathBuf],
    files: Vec<SourceFile>,
    by_path: HashMap<PathBuf, usize>,
}

impl Loader<'_> {
    fn load(&mut self, path: PathBuf, from: Option<(usize, Span, &str)>) -> Result<usize, Error> {
        let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if let Some(&i) = self.by_path.get(&key) {
            return Ok(i);
        }
        let text = std::fs::read_to_string(&path).map_err(|source| match from {
            Some((file, span, name)) if source.kind() == std::io::ErrorKind::NotFound => {
                self.files[file].err(span, IdlErrorKind::MissingInclude(name.to_owned()))
            }
            None if source.kind() == std::io::ErrorKind::NotFound => Error::NotFound(path.clone()),
            _ => Error::Io {
                path: path.clone(),
                source,
            },
        })?;
        let index = self.add(path.clone(), key, text)?;
        let includes = self.files[index].doc.includes.clone();
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for inc in includes {
            let candidates = std::iter::once(dir.join(&inc.path))
                .chain(self.include_dirs.iter().map(|d| d.join(&inc.path)));
            let found = candidates
                .into_iter()
                .find(|p| p.is_file())
                .unwrap_or_else(|| dir.join(&inc.path));
            let child = self.load(found, Some((index, inc.span, &inc.path)))?;
            let stem = Path::new(&inc.path)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            self.files[index].includes.insert(stem, child);
        }
        Ok(index)
    }

    /// Parses `text`, the contents of `path` (`key`: its canonical form), and adds it; its
    /// includes are not loaded.
    fn add(&mut self, path: PathBuf, key: PathBuf, text: String) -> Result<usize, Error> {
        let lines = LineIndex::new(&text);
        let doc = match parser::parse(&text) {
            Ok(doc) => doc,
            Err((offset, kind)) => {
                let (line, column) = lines.position(&text, offset);
                return Err(Error::Idl(IdlError {
                    location: Location {
                        file: path,
                        line,
                        column,
                    },
                    kind,
                }));
            }
        };
        let (module, package) = namespace(&doc);
        let index = self.files.len();
        self.by_path.insert(key, index);
        self.files.push(SourceFile {
            path,
            text,
            lines,
            doc,
            includes: HashMap::new(),
            module,
            package,
        });
        Ok(index)
    }
}

/// Compiles one thrift file given as text (named `path` in errors) into an [`Ir`], without
/// touching the file system: an `include` is reported missing. For the fuzz targets
/// (`crate::fuzzing`).
pub(crate) fn load_str(path: &Path, text: &str) -> Result<Ir, Error> {
    let mut loader = Loader {
        include_dirs: &[],
        files: Vec::new(),
        by_path: HashMap::new(),
    };
    let index = loader.add(path.to_path_buf(), path.to_path_buf(), text.to_owned())?;
    let file = &loader.files[index];
    if let Some(inc) = file.doc.includes.first() {
        return Err(file.err(inc.span, IdlErrorKind::MissingInclude(inc.path.clone())));
    }
    Resolver::new(&loader.files).run()
}

/// (Rust module path, wire package) of a file.
fn namespace(doc: &Document) -> (Vec<String>, String) {
    let ns = |scope: &str| {
        doc.namespaces
            .iter()
            .find(|n| n.scope == scope)
            .map(|n| n.name.as_str())
    };
    let last = |s: &str| {
        s.rsplit(['.', '/'])
            .next()
            .unwrap_or_default()
            .to_lowercase()
    };
    let module = if let Some(rs) = ns("rs") {
        rs.split('.').map(names::module).collect()
    } else if let Some(ns) = ns("go").or_else(|| ns("*")) {
        vec![names::module(&last(ns))]
    } else {
        Vec::new()
    };
    let package = ns("go").or_else(|| ns("rs")).map(last).unwrap_or_default();
    (module, package)
}

/// A top-level definition: file index and index into its definitions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct DefId(usize, usize);

struct Resolver<'a> {
    files: &'a [SourceFile],
    /// Per file: IDL name → definition.
    symbols: Vec<HashMap<&'a str, DefId>>,
    /// Typedefs being resolved (cycle detection).
    resolving: HashSet<DefId>,
    /// Resolved typedef targets.
    aliases: HashMap<DefId, TypeRef>,
    /// Set elements and map keys, checked for a total order once every type is known.
    keys: Vec<(TypeRef, usize, Span)>,
}

/// Deepest chain of constants referring to constants.
const MAX_CONST_DEPTH: usize = 32;

impl<'a> Resolver<'a> {
    fn new(files: &'a [SourceFile]) -> Self {
        Resolver {
            files,
            symbols: Vec::new(),
            resolving: HashSet::new(),
            aliases: HashMap::new(),
            keys: Vec::new(),
        }
    }

    fn def(&self, id: DefId) -> &'a Definition {
        &self.files[id.0].doc.definitions[id.1]
    }

    fn run(mut self) -> Result<Ir, Error> {
        self.collect_symbols()?;
        let files = self.files;
        let mut packages: BTreeMap<Vec<String>, Package> = BTreeMap::new();
        for (fi, file) in files.iter().enumerate() {
            let pkg = packages
                .entry(file.module.clone())
                .or_insert_with(|| Package {
                    name: file.package.clone(),
                    module: file.module.clone(),
                    ..Package::default()
                });
            if pkg.name.is_empty() {
                pkg.name.clone_from(&file.package);
            }
            for (di, def) in file.doc.definitions.iter().enumerate() {
                match def {
                    Definition::Const(c) => {
                        let ty = self.ty(fi, &c.ty)?;
                        let value = self.eval(fi, &c.value, &ty, 0)?;
                        pkg.consts.push(ConstDef {
                            name: c.name.text.clone(),
                            rust_name: names::shouty(&c.name.text),
                            ty,
                            value,
                            doc: c.doc.clone(),
                            origin: file.loc(c.name.span),
                        });
                    }
                    Definition::Typedef(t) => {
                        let target = self.alias(DefId(fi, di))?;
                        pkg.types.push(TypeDef {
                            name: t.name.text.clone(),
                            rust_name: names::camel(&t.name.text),
                            doc: t.doc.clone(),
                            origin: file.loc(t.name.span),
                            kind: TypeDefKind::Alias(target),
                        });
                    }
                    Definition::Enum(e) => {
                        let values = enum_values(file, e)?
                            .into_iter()
                            .zip(&e.values)
                            .map(|((name, value), v)| EnumValue {
                                rust_name: names::shouty(&name),
                                name,
                                value,
                                doc: v.doc.clone(),
                            })
                            .collect::<Vec<_>>();
                        check_unique(
                            file,
                            e.values
                                .iter()
                                .map(|v| (names::shouty(&v.name.text), v.name.span)),
                        )?;
                        pkg.types.push(TypeDef {
                            name: e.name.text.clone(),
                            rust_name: names::camel(&e.name.text),
                            doc: e.doc.clone(),
                            origin: file.loc(e.name.span),
                            kind: TypeDefKind::Enum(values),
                        });
                    }
                    Definition::Struct(s) => {
                        if s.kind == StructKind::Union && s.fields.is_empty() {
                            return Err(file.err(
                                s.name.span,
                                IdlErrorKind::Invalid(format!(
                                    "union `{}` has no fields",
                                    s.name.text
                                )),
                            ));
                        }
                        let fields = self.fields(fi, &s.fields, FieldUse::Struct)?;
                        let kind = match s.kind {
                            StructKind::Struct => TypeDefKind::Struct(fields),
                            StructKind::Union => TypeDefKind::Union(fields),
                            StructKind::Exception => TypeDefKind::Exception(fields),
                        };
                        pkg.types.push(TypeDef {
                            name: s.name.text.clone(),
                            rust_name: names::camel(&s.name.text),
                            doc: s.doc.clone(),
                            origin: file.loc(s.name.span),
                            kind,
                        });
                    }
                    Definition::Service(s) => {
                        let methods = self.service_methods(DefId(fi, di), &mut Vec::new())?;
                        pkg.services.push(ServiceDef {
                            name: s.name.text.clone(),
                            rust_name: names::camel(&s.name.text),
                            doc: s.doc.clone(),
                            origin: file.loc(s.name.span),
                            methods,
                        });
                    }
                }
            }
        }
        let mut packages: Vec<Package> = packages.into_values().collect();
        mark_boxed(&mut packages);
        self.check_keys(&packages)?;
        Ok(Ir {
            kind: IdlKind::Thrift,
            root: self.files[0].path.clone(),
            root_module: self.files[0].module.clone(),
            packages,
            files: self.files.iter().map(|f| f.path.clone()).collect(),
            file_descriptor_set: None,
        })
    }

    /// Names per file, and duplicate Rust names per package.
    fn collect_symbols(&mut self) -> Result<(), Error> {
        let files = self.files;
        let mut per_module: HashMap<&[String], HashSet<String>> = HashMap::new();
        for (fi, file) in files.iter().enumerate() {
            let mut table = HashMap::new();
            let taken = per_module.entry(&file.module).or_default();
            for (di, def) in file.doc.definitions.iter().enumerate() {
                let name = def_name(def);
                let rust = match def {
                    Definition::Const(_) => names::shouty(&name.text),
                    _ => names::camel(&name.text),
                };
                if table.insert(name.text.as_str(), DefId(fi, di)).is_some() || !taken.insert(rust)
                {
                    return Err(file.err(name.span, IdlErrorKind::Duplicate(name.text.clone())));
                }
            }
            self.symbols.push(table);
        }
        Ok(())
    }

    /// Finds a definition by the name `file` uses for it (`Name` or `include.Name`).
    fn lookup(&self, file: usize, name: &str) -> Option<DefId> {
        if let Some(&id) = self.symbols[file].get(name) {
            return Some(id);
        }
        let (inc, rest) = name.split_once('.')?;
        let &target = self.files[file].includes.get(inc)?;
        self.symbols[target].get(rest).copied()
    }

    fn ty(&mut self, file: usize, t: &ast::Type) -> Result<TypeRef, Error> {
        let files = self.files;
        let f = &files[file];
        Ok(match &t.kind {
            TypeKind::Bool => TypeRef::Bool,
            TypeKind::Byte | TypeKind::I8 => TypeRef::I8,
            TypeKind::I16 => TypeRef::I16,
            TypeKind::I32 => TypeRef::I32,
            TypeKind::I64 => TypeRef::I64,
            TypeKind::Double => TypeRef::Double,
            TypeKind::String => TypeRef::String,
            TypeKind::Binary => TypeRef::Binary,
            TypeKind::Uuid => {
                return Err(f.err(t.span, IdlErrorKind::Unsupported("the uuid type".into())))
            }
            TypeKind::List(e) => TypeRef::List(Box::new(self.ty(file, e)?)),
            TypeKind::Set(e) => {
                let e = self.ty(file, e)?;
                self.keys.push((e.clone(), file, t.span));
                TypeRef::Set(Box::new(e))
            }
            TypeKind::Map(k, v) => {
                let k = self.ty(file, k)?;
                self.keys.push((k.clone(), file, t.span));
                TypeRef::Map(Box::new(k), Box::new(self.ty(file, v)?))
            }
            TypeKind::Named(name) => {
                let id = self
                    .lookup(file, name)
                    .ok_or_else(|| f.err(t.span, IdlErrorKind::UnknownType(name.clone())))?;
                let def_file = &self.files[id.0];
                let kind = match self.def(id) {
                    Definition::Struct(s) => match s.kind {
                        StructKind::Struct => NamedKind::Struct,
                        StructKind::Union => NamedKind::Union,
                        StructKind::Exception => NamedKind::Exception,
                    },
                    Definition::Enum(_) => NamedKind::Enum,
                    Definition::Typedef(_) => NamedKind::Alias(Box::new(self.alias(id)?)),
                    Definition::Const(_) | Definition::Service(_) => {
                        return Err(f.err(
                            t.span,
                            IdlErrorKind::Invalid(format!("`{name}` is not a type")),
                        ))
                    }
                };
                TypeRef::Named(NamedRef {
                    module: def_file.module.clone(),
                    rust_name: names::camel(&def_name(self.def(id)).text),
                    kind,
                })
            }
        })
    }

    fn alias(&mut self, id: DefId) -> Result<TypeRef, Error> {
        if let Some(t) = self.aliases.get(&id) {
            return Ok(t.clone());
        }
        let Definition::Typedef(td) = self.def(id) else {
            return Err(self.files[id.0].err(
                def_name(self.def(id)).span,
                IdlErrorKind::Invalid("not a typedef".into()),
            ));
        };
        if !self.resolving.insert(id) {
            return Err(self.files[id.0].err(
                td.name.span,
                IdlErrorKind::Invalid(format!("typedef `{}` refers to itself", td.name.text)),
            ));
        }
        let t = self.ty(id.0, &td.ty)?;
        self.resolving.remove(&id);
        self.aliases.insert(id, t.clone());
        Ok(t)
    }

    fn fields(
        &mut self,
        file: usize,
        fields: &[ast::Field],
        usage: FieldUse,
    ) -> Result<Vec<FieldDef>, Error> {
        let files = self.files;
        let f = &files[file];
        let mut out = Vec::with_capacity(fields.len());
        let mut ids = HashSet::new();
        let mut names_seen = HashSet::new();
        let mut implicit: i64 = 0;
        for field in fields {
            let id = match field.id {
                Some((id, span)) => {
                    if !(1..=i64::from(i16::MAX)).contains(&id) {
                        return Err(f.err(
                            span,
                            IdlErrorKind::Invalid(format!("field id {id} is not in 1..=32767")),
                        ));
                    }
                    id
                }
                None => {
                    // Apache Thrift numbers fields without an id -1, -2, ...
                    implicit -= 1;
                    implicit
                }
            };
            let span = field.id.map_or(field.name.span, |(_, s)| s);
            let id = i16::try_from(id).map_err(|_| {
                f.err(
                    span,
                    IdlErrorKind::Invalid("too many fields without ids".into()),
                )
            })?;
            if !ids.insert(id) {
                return Err(f.err(span, IdlErrorKind::Duplicate(format!("field id {id}"))));
            }
            let rust_name = names::snake(&field.name.text);
            if !names_seen.insert(rust_name.clone()) {
                return Err(f.err(
                    field.name.span,
                    IdlErrorKind::Duplicate(field.name.text.clone()),
                ));
            }
            let ty = self.ty(file, &field.ty)?;
            if usage == FieldUse::Throws
                && !matches!(
                    ty.resolved(),
                    TypeRef::Named(NamedRef {
                        kind: NamedKind::Exception,
                        ..
                    })
                )
            {
                return Err(f.err(
                    field.ty.span,
                    IdlErrorKind::Invalid("`throws` lists exceptions only".into()),
                ));
            }
            let default = match &field.default {
                Some(d) => Some(self.eval(file, d, &ty, 0)?),
                None => None,
            };
            out.push(FieldDef {
                id,
                name: field.name.text.clone(),
                rust_name,
                ty,
                req: match (usage, field.req) {
                    // Exceptions in a Result struct are set one at a time.
                    (FieldUse::Throws, _) | (_, ast::Req::Optional) => Requiredness::Optional,
                    (_, ast::Req::Required) => Requiredness::Required,
                    (_, ast::Req::Default) => Requiredness::Default,
                },
                default,
                doc: field.doc.clone(),
                boxed: false,
                origin: f.loc(field.name.span),
            });
        }
        Ok(out)
    }

    /// The methods of a service, those of the services it extends first.
    fn service_methods(
        &mut self,
        id: DefId,
        chain: &mut Vec<DefId>,
    ) -> Result<Vec<MethodDef>, Error> {
        let file = id.0;
        let files = self.files;
        let f = &files[file];
        let Definition::Service(svc) = self.def(id) else {
            return Ok(Vec::new());
        };
        if chain.contains(&id) {
            return Err(f.err(
                svc.name.span,
                IdlErrorKind::Invalid(format!("service `{}` extends itself", svc.name.text)),
            ));
        }
        chain.push(id);
        let mut methods = match &svc.extends {
            None => Vec::new(),
            Some(base) => {
                let base_id = self
                    .lookup(file, &base.text)
                    .filter(|b| matches!(self.def(*b), Definition::Service(_)))
                    .ok_or_else(|| {
                        f.err(base.span, IdlErrorKind::UnknownService(base.text.clone()))
                    })?;
                self.service_methods(base_id, chain)?
            }
        };
        chain.pop();
        for func in &svc.functions {
            let m = self.method(file, func)?;
            if methods
                .iter()
                .any(|x: &MethodDef| x.rust_name == m.rust_name)
            {
                return Err(f.err(
                    func.name.span,
                    IdlErrorKind::Duplicate(func.name.text.clone()),
                ));
            }
            methods.push(m);
        }
        Ok(methods)
    }

    fn method(&mut self, file: usize, func: &ast::Function) -> Result<MethodDef, Error> {
        let files = self.files;
        let f = &files[file];
        if func.oneway {
            return Err(f.err(
                func.name.span,
                IdlErrorKind::Unsupported("oneway methods".into()),
            ));
        }
        let mut mode = None;
        for a in &func.annotations {
            if a.key.text != "streaming.mode" {
                continue;
            }
            let (value, span) = match &a.value {
                Some((v, s)) => (v.as_str(), *s),
                None => ("", a.key.span),
            };
            mode = Some(match value {
                "bidirectional" => Mode::Bidi,
                "client" => Mode::ClientStreaming,
                "server" => Mode::ServerStreaming,
                "unary" => Mode::Unary,
                other => return Err(f.err(span, IdlErrorKind::BadStreamingMode(other.to_owned()))),
            });
        }
        if mode.is_some() && func.args.len() != 1 {
            return Err(f.err(
                func.name.span,
                IdlErrorKind::StreamingArity {
                    method: func.name.text.clone(),
                    count: func.args.len(),
                },
            ));
        }
        let mode = mode.unwrap_or(Mode::Unary);
        let args = self.fields(file, &func.args, FieldUse::Args)?;
        let response = match &func.ret {
            Some(t) => Some(self.ty(file, t)?),
            None => None,
        };
        let exceptions = self.fields(file, &func.throws, FieldUse::Throws)?;
        if mode != Mode::Unary {
            let streaming = |what: &str| {
                IdlErrorKind::Invalid(format!("streaming method `{}` {what}", func.name.text))
            };
            if !args[0].ty.is_struct_like() {
                return Err(f.err(func.args[0].ty.span, streaming("must take a struct")));
            }
            match (&response, &func.ret) {
                (Some(r), Some(t)) if !r.is_struct_like() => {
                    return Err(f.err(t.span, streaming("must return a struct")))
                }
                (None, _) => return Err(f.err(func.name.span, streaming("must return a struct"))),
                _ => {}
            }
            if !exceptions.is_empty() {
                return Err(f.err(
                    func.throws[0].name.span,
                    streaming("cannot declare exceptions (end the stream with a status)"),
                ));
            }
        }
        Ok(MethodDef {
            name: func.name.text.clone(),
            rust_name: names::snake(&func.name.text),
            doc: func.doc.clone(),
            origin: f.loc(func.name.span),
            mode,
            args,
            response,
            exceptions,
        })
    }

    /// Evaluates a constant expression as a value of type `ty`.
    fn eval(
        &mut self,
        file: usize,
        e: &ConstExpr,
        ty: &TypeRef,
        depth: usize,
    ) -> Result<ConstValue, Error> {
        let files = self.files;
        let f = &files[file];
        let mismatch =
            |what: &str| f.err(e.span, IdlErrorKind::ConstType(format!("expected {what}")));
        if let ConstKind::Ident(name) = &e.kind {
            let bool_literal =
                *ty.resolved() == TypeRef::Bool && matches!(name.as_str(), "true" | "false");
            if !bool_literal {
                return self.const_ref(file, e, name, ty, depth);
            }
        }
        let ty = ty.resolved().clone();
        Ok(match (&ty, &e.kind) {
            (TypeRef::Bool, ConstKind::Int(i @ (0 | 1))) => ConstValue::Bool(*i == 1),
            (TypeRef::Bool, ConstKind::Ident(s)) if s == "true" || s == "false" => {
                ConstValue::Bool(s == "true")
            }
            (TypeRef::Bool, _) => return Err(mismatch("a bool")),
            (TypeRef::I8 | TypeRef::I16 | TypeRef::I32 | TypeRef::I64, ConstKind::Int(i)) => {
                let (lo, hi, name) = match ty {
                    TypeRef::I8 => (i64::from(i8::MIN), i64::from(i8::MAX), "i8"),
                    TypeRef::I16 => (i64::from(i16::MIN), i64::from(i16::MAX), "i16"),
                    TypeRef::I32 => (i64::from(i32::MIN), i64::from(i32::MAX), "i32"),
                    _ => (i64::MIN, i64::MAX, "i64"),
                };
                if *i < lo || *i > hi {
                    return Err(f.err(
                        e.span,
                        IdlErrorKind::ConstType(format!("{i} does not fit in {name}")),
                    ));
                }
                ConstValue::Int(*i)
            }
            (TypeRef::I8 | TypeRef::I16 | TypeRef::I32 | TypeRef::I64, _) => {
                return Err(mismatch("an integer"))
            }
            (TypeRef::Double, ConstKind::Double(d)) => ConstValue::Double(*d),
            // Integers are exact as doubles up to 2^53; larger ones round as in every IDL compiler.
            (TypeRef::Double, ConstKind::Int(i)) => ConstValue::Double(*i as f64),
            (TypeRef::Double, _) => return Err(mismatch("a number")),
            (TypeRef::String | TypeRef::Binary, ConstKind::Literal(s)) => {
                ConstValue::String(s.clone())
            }
            (TypeRef::String | TypeRef::Binary, _) => return Err(mismatch("a string")),
            (TypeRef::List(t) | TypeRef::Set(t), ConstKind::List(items)) => ConstValue::List(
                items
                    .iter()
                    .map(|i| self.eval(file, i, t, depth))
                    .collect::<Result<_, _>>()?,
            ),
            (TypeRef::List(_) | TypeRef::Set(_), _) => return Err(mismatch("a list `[...]`")),
            (TypeRef::Map(k, v), ConstKind::Map(items)) => ConstValue::Map(
                items
                    .iter()
                    .map(|(ke, ve)| {
                        Ok((
                            self.eval(file, ke, k, depth)?,
                            self.eval(file, ve, v, depth)?,
                        ))
                    })
                    .collect::<Result<_, Error>>()?,
            ),
            (TypeRef::Map(..), _) => return Err(mismatch("a map `{...}`")),
            (
                TypeRef::Named(NamedRef {
                    kind: NamedKind::Enum,
                    ..
                }),
                ConstKind::Int(i),
            ) => {
                let value = i32::try_from(*i).map_err(|_| mismatch("an i32 enum value"))?;
                ConstValue::Enum {
                    rust_name: None,
                    value,
                }
            }
            (
                TypeRef::Named(NamedRef {
                    kind: NamedKind::Enum,
                    ..
                }),
                _,
            ) => return Err(mismatch("an enum value")),
            (TypeRef::Named(_) | TypeRef::Rust(_), _) => {
                return Err(f.err(
                    e.span,
                    IdlErrorKind::Unsupported("constants of struct types".into()),
                ))
            }
        })
    }

    /// Resolves a named constant or enum value used as a value of type `ty`.
    fn const_ref(
        &mut self,
        file: usize,
        e: &ConstExpr,
        name: &str,
        ty: &TypeRef,
        depth: usize,
    ) -> Result<ConstValue, Error> {
        let files = self.files;
        let f = &files[file];
        if depth > MAX_CONST_DEPTH {
            return Err(f.err(
                e.span,
                IdlErrorKind::Invalid("constants refer to each other too deeply".into()),
            ));
        }
        // A constant: `NAME` or `include.NAME`.
        if let Some(id) = self.lookup(file, name) {
            if let Definition::Const(c) = self.def(id) {
                let cty = self.ty(id.0, &c.ty)?;
                if cty.resolved() != ty.resolved() {
                    return Err(f.err(
                        e.span,
                        IdlErrorKind::ConstType(format!("constant `{name}` has another type")),
                    ));
                }
                return self.eval(id.0, &c.value, ty, depth + 1);
            }
        }
        // An enum value: `Enum.VALUE` or `include.Enum.VALUE`.
        if let Some((enum_name, value_name)) = name.rsplit_once('.') {
            if let Some(id) = self.lookup(file, enum_name) {
                if let Definition::Enum(en) = self.def(id) {
                    let values = enum_values(&self.files[id.0], en)?;
                    let Some((vname, v)) = values.into_iter().find(|(n, _)| n == value_name) else {
                        return Err(f.err(e.span, IdlErrorKind::UnknownConstant(name.to_owned())));
                    };
                    return match ty.resolved() {
                        TypeRef::Named(NamedRef {
                            kind: NamedKind::Enum,
                            rust_name,
                            ..
                        }) if *rust_name == names::camel(&en.name.text) => Ok(ConstValue::Enum {
                            rust_name: Some(names::shouty(&vname)),
                            value: v,
                        }),
                        TypeRef::I8 | TypeRef::I16 | TypeRef::I32 | TypeRef::I64 => {
                            Ok(ConstValue::Int(i64::from(v)))
                        }
                        _ => Err(f.err(
                            e.span,
                            IdlErrorKind::ConstType(format!("`{name}` is a value of another enum")),
                        )),
                    };
                }
            }
        }
        Err(f.err(e.span, IdlErrorKind::UnknownConstant(name.to_owned())))
    }

    /// Set elements and map keys become `BTreeSet`/`BTreeMap` keys: they need a total order,
    /// which `f64` (and anything containing it) lacks.
    fn check_keys(&self, packages: &[Package]) -> Result<(), Error> {
        let index = TypeIndex::new(packages);
        for (ty, file, span) in &self.keys {
            if index.contains_double(ty) {
                return Err(self.files[*file].err(
                    *span,
                    IdlErrorKind::Unsupported(
                        "set elements and map keys containing `double` (no total order)".into(),
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldUse {
    Struct,
    Args,
    Throws,
}

fn def_name(def: &Definition) -> &ast::Name {
    match def {
        Definition::Const(c) => &c.name,
        Definition::Typedef(t) => &t.name,
        Definition::Enum(e) => &e.name,
        Definition::Struct(s) => &s.name,
        Definition::Service(s) => &s.name,
    }
}

/// The values of an enum, numbering unnumbered ones after the previous (from 0).
fn enum_values(file: &SourceFile, e: &ast::Enum) -> Result<Vec<(String, i32)>, Error> {
    let mut next: i64 = 0;
    let mut out = Vec::with_capacity(e.values.len());
    for v in &e.values {
        let (value, span) = v.value.unwrap_or((next, v.name.span));
        let value = i32::try_from(value).map_err(|_| {
            file.err(
                span,
                IdlErrorKind::Invalid(format!("enum value {value} does not fit in i32")),
            )
        })?;
        next = i64::from(value) + 1;
        out.push((v.name.text.clone(), value));
    }
    Ok(out)
}

fn check_unique(
    file: &SourceFile,
    names: impl Iterator<Item = (String, Span)>,
) -> Result<(), Error> {
    let mut seen = HashSet::new();
    for (n, span) in names {
        if !seen.insert(n.clone()) {
            return Err(file.err(span, IdlErrorKind::Duplicate(n)));
        }
    }
    Ok(())
}

/// Boxes struct fields whose type (directly, not through a container) contains the struct
/// again, so recursive types have a finite size.
fn mark_boxed(packages: &mut [Package]) {
    let mut boxed = Vec::new();
    {
        let index = TypeIndex::new(packages);
        for (pi, p) in packages.iter().enumerate() {
            for (ti, t) in p.types.iter().enumerate() {
                let me = (p.module.as_slice(), t.rust_name.as_str());
                for (fi, f) in t.fields().iter().enumerate() {
                    if f.ty
                        .direct_struct()
                        .is_some_and(|target| index.reaches(target, me))
                    {
                        boxed.push((pi, ti, fi));
                    }
                }
            }
        }
    }
    for (pi, ti, fi) in boxed {
        if let TypeDefKind::Struct(f) | TypeDefKind::Union(f) | TypeDefKind::Exception(f) =
            &mut packages[pi].types[ti].kind
        {
            f[fi].boxed = true;
        }
    }
}
