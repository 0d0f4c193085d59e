//! [`Builder`]: compile IDL files to Rust from `build.rs` (into `OUT_DIR`) or anywhere else.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::ir::{IdlKind, Ir};

/// Compiles `.thrift` and `.proto` files into Rust modules, one output file per IDL file.
///
/// The output of `idl/echo.thrift` is `<out_dir>/echo.rs`, included with
/// `rpc_core::include_generated!("echo")`. A thrift and a proto file with the same stem would
/// both write `echo.rs`: compile one of them with [`Builder::output_name`] (a second
/// `Builder`), or keep them in different directories and out dirs.
///
/// ```no_run
/// // build.rs
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     rpc_codegen::Builder::new().compile(&["idl/echo.thrift"], &["idl"])?;
///     rpc_codegen::Builder::new()
///         .output_name("echo_proto")
///         .compile(&["idl/echo.proto"], &["idl"])?;
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    out_dir: Option<PathBuf>,
    output_name: Option<String>,
    rerun_if_changed: Option<bool>,
    extern_paths: Vec<(String, String)>,
}

/// The code generated for one IDL file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GeneratedFile {
    /// The IDL file compiled.
    pub idl: PathBuf,
    /// The output file stem (`echo` → `echo.rs`).
    pub name: String,
    /// The formatted Rust code.
    pub code: String,
    /// Every file read: the IDL and all it includes or imports.
    pub inputs: Vec<PathBuf>,
}

impl Builder {
    /// A builder writing to `OUT_DIR` and printing `cargo:rerun-if-changed` lines when run from
    /// a build script.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Writes the output into `dir` instead of `OUT_DIR`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.out_dir = Some(dir.into());
        self
    }

    /// Names the output file `<name>.rs` instead of after the IDL file's stem. Only for
    /// compiling one file.
    pub fn output_name(mut self, name: impl Into<String>) -> Builder {
        self.output_name = Some(name.into());
        self
    }

    /// Whether to print `cargo:rerun-if-changed=<file>` for every file read. Defaults to yes
    /// inside a build script (when `OUT_DIR` is set and no [`Builder::out_dir`] was given).
    pub fn emit_rerun_if_changed(mut self, yes: bool) -> Builder {
        self.rerun_if_changed = Some(yes);
        self
    }

    /// Protobuf: uses the Rust types at `rust_path` for the protobuf package or message at
    /// `proto_path` (both fully qualified: `.echo` → `::my_crate::echo`) instead of generating
    /// them. The services are still generated, on those types. This is how stubs reuse messages
    /// a crate already has — those of tonic's generated code while a team migrates service by
    /// service (both are prost 0.14 messages), or a shared `*-types` crate. The same rule as
    /// prost-build's `Config::extern_path`, which it is passed to.
    ///
    /// ```no_run
    /// // build.rs: our service stubs on the messages tonic-prost-build generated into
    /// // `crate::pb` (a module that `include!`s tonic's output).
    /// rpc_codegen::Builder::new()
    ///     .extern_path(".echo", "crate::pb")
    ///     .compile(&["idl/echo.proto"], &["idl"])
    ///     .unwrap();
    /// ```
    pub fn extern_path(
        mut self,
        proto_path: impl Into<String>,
        rust_path: impl Into<String>,
    ) -> Builder {
        self.extern_paths
            .push((proto_path.into(), rust_path.into()));
        self
    }

    /// Compiles every IDL in `idls` (`.thrift` or `.proto`, picked by extension), looking
    /// for includes and imports in `includes` (after the including file's own directory, for
    /// thrift), and writes one `<stem>.rs` per IDL. Files whose content did not change are not
    /// rewritten, so cargo does not rebuild needlessly. Returns the paths written.
    pub fn compile(
        &self,
        idls: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<Vec<PathBuf>, Error> {
        if self.output_name.is_some() && idls.len() > 1 {
            return Err(Error::OutputNameWithManyFiles(idls.len()));
        }
        let out_dir = match &self.out_dir {
            Some(d) => d.clone(),
            None => std::env::var_os("OUT_DIR")
                .map(PathBuf::from)
                .ok_or(Error::NoOutDir)?,
        };
        let rerun = self.rerun_if_changed.unwrap_or(self.out_dir.is_none());
        let mut generated = Vec::with_capacity(idls.len());
        let mut names: HashMap<String, PathBuf> = HashMap::new();
        for idl in idls {
            let file = self.generate(idl.as_ref(), includes)?;
            if rerun {
                for input in &file.inputs {
                    println!("cargo:rerun-if-changed={}", input.display());
                }
            }
            if let Some(first) = names.insert(file.name.clone(), file.idl.clone()) {
                return Err(Error::OutputCollision {
                    name: file.name,
                    first,
                    second: file.idl,
                });
            }
            generated.push(file);
        }
        std::fs::create_dir_all(&out_dir).map_err(|source| Error::Io {
            path: out_dir.clone(),
            source,
        })?;
        let mut written = Vec::with_capacity(generated.len());
        for file in generated {
            let path = out_dir.join(format!("{}.rs", file.name));
            write_if_changed(&path, &file.code)?;
            written.push(path);
        }
        Ok(written)
    }

    /// Generates the code for one IDL without writing it (what [`Builder::compile`] writes).
    pub fn generate(
        &self,
        idl: &Path,
        includes: &[impl AsRef<Path>],
    ) -> Result<GeneratedFile, Error> {
        let includes: Vec<PathBuf> = includes.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let ir = match kind_of(idl) {
            Some(IdlKind::Protobuf) => crate::proto::load(idl, &includes, &self.extern_paths)?,
            _ => load(idl, &includes)?,
        };
        let code = crate::gen::generate(&ir)?;
        let name = match &self.output_name {
            Some(n) => n.clone(),
            None => idl
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        Ok(GeneratedFile {
            idl: idl.to_path_buf(),
            name,
            code,
            inputs: ir.files,
        })
    }
}

/// Reads an IDL file and what it includes into the [`Ir`], picking the frontend by extension.
pub fn load(idl: &Path, includes: &[PathBuf]) -> Result<Ir, Error> {
    match kind_of(idl) {
        Some(IdlKind::Thrift) => crate::thrift::load(idl, includes),
        Some(IdlKind::Protobuf) => crate::proto::load(idl, includes, &[]),
        None => Err(Error::UnknownExtension(idl.to_path_buf())),
    }
}

fn kind_of(path: &Path) -> Option<IdlKind> {
    match path.extension()?.to_str()? {
        "thrift" => Some(IdlKind::Thrift),
        "proto" => Some(IdlKind::Protobuf),
        _ => None,
    }
}

fn write_if_changed(path: &Path, code: &str) -> Result<(), Error> {
    if std::fs::read(path).is_ok_and(|old| old == code.as_bytes()) {
        return Ok(());
    }
    std::fs::write(path, code).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
