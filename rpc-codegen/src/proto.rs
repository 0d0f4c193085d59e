//! The protobuf frontend: protox compiles the `.proto` files (no `protoc` binary), prost-build
//! generates the messages, and the services go into the [`Ir`] for our generator.
//!
//! prost-build resolves each method's input and output to a Rust path relative to the
//! package's module; the services are captured through its `ServiceGenerator` hook so those
//! paths are exactly the ones prost used. Every file the root imports is generated too (its
//! messages and services), in the module of its package. `google.protobuf` types map to
//! `::prost_types` (prost's default), so a crate using them depends on `prost-types`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use miette::Diagnostic;
use prost_build::Module;
use prost_types::FileDescriptorProto;

use crate::error::{Error, IdlError, IdlErrorKind, Location};
use crate::ir::*;

/// Compiles `root` and its imports into one [`Ir`]; messages under an `extern_paths` entry
/// (protobuf path, Rust path) are not generated but named at that Rust path.
pub(crate) fn load(
    root: &Path,
    include_dirs: &[PathBuf],
    extern_paths: &[(String, String)],
) -> Result<Ir, Error> {
    if !root.is_file() {
        return Err(Error::NotFound(root.to_path_buf()));
    }
    // protox names files relative to an include directory; a root outside all of them is
    // found through its own directory (as for thrift).
    let mut includes = include_dirs.to_vec();
    let under = |dir: &Path| match (std::fs::canonicalize(dir), std::fs::canonicalize(root)) {
        (Ok(d), Ok(r)) => r.starts_with(d),
        _ => false,
    };
    if !includes.iter().any(|d| under(d)) {
        includes.push(root.parent().map(Path::to_path_buf).unwrap_or_default());
    }
    let mut compiler =
        protox::Compiler::new(&includes).map_err(|e| convert(&e, &includes, root))?;
    compiler.include_imports(true).include_source_info(true);
    compiler
        .open_file(root)
        .map_err(|e| convert(&e, &includes, root))?;
    let files: Vec<PathBuf> = compiler
        .files()
        .filter_map(|f| f.path().map(Path::to_path_buf))
        .collect();
    let paths: HashMap<String, PathBuf> = compiler
        .files()
        .filter_map(|f| Some((f.name().to_owned(), f.path()?.to_path_buf())))
        .collect();
    let fds = compiler.file_descriptor_set();
    let root_package = fds
        .file
        .iter()
        .find(|f| paths.get(f.name()).is_some_and(|p| same_file(p, root)))
        .map(|f| f.package().to_owned())
        .unwrap_or_default();

    let requests: Vec<(Module, FileDescriptorProto)> = fds
        .file
        .iter()
        .filter(|f| f.package() != "google.protobuf" || root_package == "google.protobuf")
        .map(|f| (Module::from_protobuf_package_name(f.package()), f.clone()))
        .collect();
    let origins = Origins::new(&requests, &paths);

    let captured = Rc::new(RefCell::new(Vec::new()));
    let mut config = prost_build::Config::new();
    config.service_generator(Box::new(Capture(captured.clone())));
    for (proto_path, rust_path) in extern_paths {
        config.extern_path(proto_path, rust_path);
    }
    let code = config.generate(requests).map_err(Error::Prost)?;

    let mut packages: BTreeMap<Vec<String>, Package> = BTreeMap::new();
    for (module, code) in code {
        let parts: Vec<String> = module.parts().map(str::to_owned).collect();
        packages
            .entry(parts.clone())
            .or_insert_with(|| Package {
                module: parts,
                ..Package::default()
            })
            .prost_code = Some(code);
    }
    for file in &fds.file {
        let module: Vec<String> = Module::from_protobuf_package_name(file.package())
            .parts()
            .map(str::to_owned)
            .collect();
        if let Some(p) = packages.get_mut(&module) {
            file.package().clone_into(&mut p.name);
        }
    }
    for svc in captured.take() {
        let module: Vec<String> = Module::from_protobuf_package_name(&svc.package)
            .parts()
            .map(str::to_owned)
            .collect();
        let def = service(&svc, &origins, root);
        let pkg = packages.entry(module.clone()).or_insert_with(|| Package {
            name: svc.package.clone(),
            module,
            ..Package::default()
        });
        pkg.services.push(def);
    }
    // What server reflection serves: every file, imports included, in dependency order
    // (protox lists imports first), without the source info (comments and spans: most of
    // the bytes, and not needed to describe the types).
    let mut embedded = fds.clone();
    for f in &mut embedded.file {
        f.source_code_info = None;
    }
    let file_descriptor_set = Some(prost::Message::encode_to_vec(&embedded));
    Ok(Ir {
        kind: IdlKind::Protobuf,
        root: root.to_path_buf(),
        root_module: Module::from_protobuf_package_name(&root_package)
            .parts()
            .map(str::to_owned)
            .collect(),
        packages: packages.into_values().collect(),
        files,
        file_descriptor_set,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

struct Capture(Rc<RefCell<Vec<prost_build::Service>>>);

impl prost_build::ServiceGenerator for Capture {
    fn generate(&mut self, service: prost_build::Service, _buf: &mut String) {
        self.0.borrow_mut().push(service);
    }
}

fn docs(c: &prost_build::Comments) -> Vec<String> {
    c.leading
        .iter()
        .chain(&c.trailing)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn service(svc: &prost_build::Service, origins: &Origins, root: &Path) -> ServiceDef {
    let fallback = Location {
        file: root.to_path_buf(),
        line: 1,
        column: 1,
    };
    let key = |method: Option<&str>| {
        (
            svc.package.clone(),
            svc.proto_name.clone(),
            method.map(str::to_owned),
        )
    };
    let methods = svc
        .methods
        .iter()
        .map(|m| MethodDef {
            name: m.proto_name.clone(),
            rust_name: m.name.clone(),
            doc: docs(&m.comments),
            origin: origins
                .0
                .get(&key(Some(&m.proto_name)))
                .cloned()
                .unwrap_or_else(|| fallback.clone()),
            mode: match (m.client_streaming, m.server_streaming) {
                (false, false) => Mode::Unary,
                (true, false) => Mode::ClientStreaming,
                (false, true) => Mode::ServerStreaming,
                (true, true) => Mode::Bidi,
            },
            args: vec![FieldDef {
                id: 1,
                name: "request".into(),
                rust_name: "request".into(),
                ty: TypeRef::Rust(m.input_type.clone()),
                req: Requiredness::Required,
                default: None,
                doc: Vec::new(),
                boxed: false,
                origin: fallback.clone(),
            }],
            response: Some(TypeRef::Rust(m.output_type.clone())),
            exceptions: Vec::new(),
        })
        .collect();
    ServiceDef {
        name: svc.proto_name.clone(),
        rust_name: svc.name.clone(),
        doc: docs(&svc.comments),
        origin: origins.0.get(&key(None)).cloned().unwrap_or(fallback),
        methods,
    }
}

/// Where services and methods are declared, from the descriptors' source info:
/// (package, service, method) → location.
struct Origins(HashMap<(String, String, Option<String>), Location>);

impl Origins {
    fn new(files: &[(Module, FileDescriptorProto)], paths: &HashMap<String, PathBuf>) -> Origins {
        // Descriptor paths: 6 = FileDescriptorProto.service, 2 = ServiceDescriptorProto.method.
        const SERVICE: i32 = 6;
        const METHOD: i32 = 2;
        let mut out = HashMap::new();
        for (_, f) in files {
            let Some(info) = &f.source_code_info else {
                continue;
            };
            let file = paths
                .get(f.name())
                .cloned()
                .unwrap_or_else(|| PathBuf::from(f.name()));
            for loc in &info.location {
                let (line, column) = match loc.span.as_slice() {
                    [l, c, ..] => (*l, *c),
                    _ => continue,
                };
                let location = Location {
                    file: file.clone(),
                    line: u32::try_from(line).unwrap_or(0).saturating_add(1),
                    column: u32::try_from(column).unwrap_or(0).saturating_add(1),
                };
                let index = |i: i32| usize::try_from(i).ok();
                match loc.path.as_slice() {
                    [SERVICE, s] => {
                        if let Some(svc) = index(*s).and_then(|s| f.service.get(s)) {
                            out.insert(
                                (f.package().to_owned(), svc.name().to_owned(), None),
                                location,
                            );
                        }
                    }
                    [SERVICE, s, METHOD, m] => {
                        let svc = index(*s).and_then(|s| f.service.get(s));
                        if let Some((svc, method)) = svc
                            .and_then(|svc| Some((svc, index(*m).and_then(|m| svc.method.get(m))?)))
                        {
                            out.insert(
                                (
                                    f.package().to_owned(),
                                    svc.name().to_owned(),
                                    Some(method.name().to_owned()),
                                ),
                                location,
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
        Origins(out)
    }
}

/// A protox error as an [`IdlError`] with the place its diagnostic labels.
fn convert(e: &protox::Error, includes: &[PathBuf], root: &Path) -> Error {
    let message = e.to_string();
    let kind = if e.is_file_not_found() {
        match message.split('\'').nth(1) {
            Some(name) if message.starts_with("import") => {
                IdlErrorKind::MissingInclude(name.to_owned())
            }
            _ => IdlErrorKind::Proto(message.clone()),
        }
    } else {
        IdlErrorKind::Proto(message.clone())
    };
    let resolve = |name: &str| {
        includes
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(name))
    };
    let labelled = e.source_code().and_then(|src| {
        let label = e.labels()?.next()?;
        let span = src.read_span(label.inner(), 0, 0).ok()?;
        let file = span.name().map(resolve).or_else(|| e.file().map(resolve))?;
        Some(Location {
            file,
            line: u32::try_from(span.line() + 1).unwrap_or(u32::MAX),
            column: u32::try_from(span.column() + 1).unwrap_or(u32::MAX),
        })
    });
    let location = match labelled {
        Some(l) => l,
        None => match e.file() {
            Some(name) => Location {
                file: resolve(name),
                line: 1,
                column: 1,
            },
            None => Location {
                file: root.to_path_buf(),
                line: 1,
                column: 1,
            },
        },
    };
    Error::Idl(IdlError { location, kind })
}
