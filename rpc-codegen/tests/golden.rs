//! Golden tests: the generated code of the test IDLs is checked in under `tests/golden/`; this
//! regenerates it and fails on any difference. After an intended change to the generator:
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p rpc-codegen --test golden
//! ```
//!
//! The checked-in files are also what `tests/modes.rs` and `tests/wire.rs` compile and run, so
//! the golden code is known to build warning-free and to work.

use std::path::{Path, PathBuf};

/// (IDL, include directories, golden file).
const CASES: &[(&str, &[&str], &str)] = &[
    ("idl/echo.thrift", &["idl"], "echo_thrift.rs"),
    ("idl/echo.proto", &["idl"], "echo_proto.rs"),
    (
        "idl/kitchen_sink.thrift",
        &["idl"],
        "kitchen_sink_thrift.rs",
    ),
    ("idl/proto/sink.proto", &["idl/proto"], "sink_proto.rs"),
    ("idl/collisions.thrift", &["idl"], "collisions_thrift.rs"),
    (
        "idl/collide/collisions.proto",
        &["idl/collide"],
        "collisions_proto.rs",
    ),
];

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

#[test]
fn generated_code_matches_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let dir = tests_dir();
    let mut stale = Vec::new();
    for (idl, includes, golden) in CASES {
        let includes: Vec<PathBuf> = includes.iter().map(|i| dir.join(i)).collect();
        let file = rpc_codegen::Builder::new()
            .generate(&dir.join(idl), &includes)
            .unwrap_or_else(|e| panic!("{idl}: {e}"));
        let path = dir.join("golden").join(golden);
        if update {
            std::fs::write(&path, &file.code).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != file.code {
            let first = expected
                .lines()
                .zip(file.code.lines())
                .position(|(a, b)| a != b)
                .map_or_else(|| "length".to_owned(), |l| format!("line {}", l + 1));
            stale.push(format!("{golden} (first difference at {first})"));
        }
    }
    assert!(
        stale.is_empty(),
        "generated code differs from the golden files: {stale:?}\n\
         rerun with UPDATE_GOLDEN=1 if the change is intended"
    );
}

#[test]
fn generation_is_deterministic() {
    let dir = tests_dir();
    for (idl, includes, _) in CASES {
        let includes: Vec<PathBuf> = includes.iter().map(|i| dir.join(i)).collect();
        let a = rpc_codegen::Builder::new()
            .generate(&dir.join(idl), &includes)
            .unwrap();
        let b = rpc_codegen::Builder::new()
            .generate(&dir.join(idl), &includes)
            .unwrap();
        assert_eq!(a.code, b.code, "{idl}");
    }
}

#[test]
fn inputs_list_every_file_read() {
    let dir = tests_dir();
    let file = rpc_codegen::Builder::new()
        .generate(&dir.join("idl/kitchen_sink.thrift"), &[dir.join("idl")])
        .unwrap();
    let names: Vec<_> = file
        .inputs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["kitchen_sink.thrift", "base.thrift"]);
    let file = rpc_codegen::Builder::new()
        .generate(&dir.join("idl/proto/sink.proto"), &[dir.join("idl/proto")])
        .unwrap();
    let names: Vec<_> = file
        .inputs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // google/protobuf/empty.proto is built into protox: no file to watch.
    assert_eq!(names, ["common.proto", "sink.proto"]);
}
