//! `rpc-codegen`: writes the code `rpc_codegen::Builder` generates into a directory, for
//! projects that check generated code in.
//!
//! ```text
//! cargo run -p rpc-codegen -- -I idl -o src/gen idl/echo.thrift idl/echo.proto --name echo_proto
//! ```

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: rpc-codegen [OPTIONS] <IDL>...

Generates Rust stubs from .thrift and .proto files, one <stem>.rs per IDL.

options:
  -I, --include <DIR>   a directory to look for includes/imports in (repeatable)
  -o, --out-dir <DIR>   where to write the .rs files (default: .)
      --name <NAME>     name the output <NAME>.rs (only with a single IDL)
      --check           do not write; fail if a file is missing or differs
  -h, --help            this text
";

struct Args {
    includes: Vec<PathBuf>,
    out_dir: PathBuf,
    name: Option<String>,
    check: bool,
    idls: Vec<PathBuf>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        includes: Vec::new(),
        out_dir: PathBuf::from("."),
        name: None,
        check: false,
        idls: Vec::new(),
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        let s = arg.to_string_lossy();
        let mut value = |what: &str| {
            it.next()
                .ok_or_else(|| format!("{s} needs a {what}"))
                .map(PathBuf::from)
        };
        match s.as_ref() {
            "-h" | "--help" => return Ok(None),
            "-I" | "--include" => args.includes.push(value("directory")?),
            "-o" | "--out-dir" => args.out_dir = value("directory")?,
            "--name" => args.name = Some(value("name")?.to_string_lossy().into_owned()),
            "--check" => args.check = true,
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            _ => args.idls.push(PathBuf::from(arg)),
        }
    }
    if args.idls.is_empty() {
        return Err("no IDL files given".into());
    }
    if args.name.is_some() && args.idls.len() > 1 {
        return Err("--name applies to a single IDL file".into());
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rpc-codegen: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut builder = rpc_codegen::Builder::new().emit_rerun_if_changed(false);
    if let Some(n) = &args.name {
        builder = builder.output_name(n.clone());
    }
    if args.check {
        let mut stale = false;
        for idl in &args.idls {
            match builder.generate(idl, &args.includes) {
                Ok(file) => {
                    let path = args.out_dir.join(format!("{}.rs", file.name));
                    if std::fs::read_to_string(&path).ok().as_deref() != Some(file.code.as_str()) {
                        eprintln!("rpc-codegen: {} is out of date", path.display());
                        stale = true;
                    }
                }
                Err(e) => {
                    eprintln!("rpc-codegen: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        return if stale {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    match builder
        .out_dir(&args.out_dir)
        .compile(&args.idls, &args.includes)
    {
        Ok(paths) => {
            for p in paths {
                println!("wrote {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rpc-codegen: {e}");
            ExitCode::FAILURE
        }
    }
}
