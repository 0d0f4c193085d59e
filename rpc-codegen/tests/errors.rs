//! IDL errors name the file, line and column, with a one-line reason.

use std::path::{Path, PathBuf};

use rpc_codegen::{Builder, Error, IdlError, IdlErrorKind};

/// Writes `files` (name, text) into a fresh directory and returns it.
fn dir_with(test: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("codegen-errors-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// Compiles `main` of `files` and returns the IDL error.
fn idl_error(test: &str, main: &str, files: &[(&str, &str)]) -> IdlError {
    let dir = dir_with(test, files);
    let err = Builder::new()
        .generate(&dir.join(main), std::slice::from_ref(&dir))
        .expect_err("the IDL is invalid");
    match err {
        Error::Idl(e) => e,
        other => panic!("not an IDL error: {other}"),
    }
}

/// (file name, line, column) of an error.
fn at(e: &IdlError) -> (String, u32, u32) {
    (
        e.location
            .file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
        e.location.line,
        e.location.column,
    )
}

#[test]
fn thrift_syntax_error() {
    let e = idl_error(
        "syntax",
        "a.thrift",
        &[("a.thrift", "struct A {\n  1: required i32\n}\n")],
    );
    assert_eq!(at(&e), ("a.thrift".into(), 3, 1));
    assert!(matches!(e.kind, IdlErrorKind::Syntax { .. }), "{e}");
    let line = e.to_string();
    assert!(
        line.ends_with("a.thrift:3:1: syntax error: expected the field's name, found `}`"),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

#[test]
fn thrift_invalid_token() {
    let e = idl_error(
        "token",
        "a.thrift",
        &[("a.thrift", "struct A {\n  1: i32 x = $\n}")],
    );
    assert_eq!(at(&e), ("a.thrift".into(), 2, 14));
    assert!(matches!(e.kind, IdlErrorKind::InvalidToken(_)), "{e}");
}

#[test]
fn thrift_unknown_type() {
    let e = idl_error(
        "unknown-type",
        "a.thrift",
        &[(
            "a.thrift",
            "struct A {\n    1: optional list<Missing> xs,\n}\n",
        )],
    );
    assert_eq!(at(&e), ("a.thrift".into(), 2, 22));
    assert_eq!(e.kind, IdlErrorKind::UnknownType("Missing".into()));
    assert!(
        e.to_string()
            .ends_with("a.thrift:2:22: unknown type `Missing`"),
        "{e}"
    );

    // Through an include prefix, reported in the file that uses it.
    let e = idl_error(
        "unknown-included-type",
        "a.thrift",
        &[
            (
                "a.thrift",
                "include \"b.thrift\"\nstruct A { 1: b.Nope x }\n",
            ),
            ("b.thrift", "struct B {}\n"),
        ],
    );
    assert_eq!(at(&e), ("a.thrift".into(), 2, 15));
    assert_eq!(e.kind, IdlErrorKind::UnknownType("b.Nope".into()));
}

#[test]
fn thrift_bad_streaming_mode() {
    let src = "struct R {}\nservice S {\n  R Go(1: R r) (streaming.mode = \"sideways\"),\n}\n";
    let e = idl_error("streaming-mode", "a.thrift", &[("a.thrift", src)]);
    assert_eq!(at(&e), ("a.thrift".into(), 3, 34));
    assert_eq!(e.kind, IdlErrorKind::BadStreamingMode("sideways".into()));
}

#[test]
fn thrift_streaming_arity() {
    let src = "struct R {}\nservice S {\n  R Go(1: R a, 2: R b) (streaming.mode = \"bidirectional\"),\n}\n";
    let e = idl_error("arity", "a.thrift", &[("a.thrift", src)]);
    assert_eq!(at(&e), ("a.thrift".into(), 3, 5));
    assert_eq!(
        e.kind,
        IdlErrorKind::StreamingArity {
            method: "Go".into(),
            count: 2
        }
    );
    let src = "service S {\n  i32 Go(1: i32 a) (streaming.mode = \"server\"),\n}\n";
    let e = idl_error("streaming-struct", "a.thrift", &[("a.thrift", src)]);
    assert_eq!(at(&e), ("a.thrift".into(), 2, 13));
}

#[test]
fn thrift_missing_include() {
    let e = idl_error(
        "missing-include",
        "a.thrift",
        &[("a.thrift", "namespace rs a\ninclude \"nope/b.thrift\"\n")],
    );
    assert_eq!(at(&e), ("a.thrift".into(), 2, 9));
    assert_eq!(e.kind, IdlErrorKind::MissingInclude("nope/b.thrift".into()));
}

#[test]
fn thrift_include_directories_are_searched() {
    let dir = dir_with(
        "include-dirs",
        &[
            (
                "src/a.thrift",
                "include \"b.thrift\"\nstruct A { 1: b.B b }\n",
            ),
            ("lib/b.thrift", "namespace rs lib\nstruct B { 1: i32 x }\n"),
        ],
    );
    let file = Builder::new()
        .generate(&dir.join("src/a.thrift"), &[dir.join("lib")])
        .unwrap();
    assert!(file.code.contains("pub b: lib::B"), "{}", file.code);
    assert_eq!(file.inputs.len(), 2);
}

#[test]
fn thrift_semantic_errors() {
    let cases: &[(&str, &str, (u32, u32))] = &[
        ("struct A {\n 1: i32 a,\n 1: i32 b }", "duplicate", (3, 2)),
        ("const i32 X = \"s\"", "expected an integer", (1, 15)),
        ("const i8 X = 300", "300 does not fit in i8", (1, 14)),
        ("const i32 X = Y", "unknown constant `Y`", (1, 15)),
        ("service S { oneway void F() }", "oneway", (1, 25)),
        (
            "struct A {}\nstruct A {}",
            "duplicate definition of `A`",
            (2, 8),
        ),
        ("struct A { 1: set<double> s }", "double", (1, 15)),
        ("typedef B A\ntypedef A B", "refers to itself", (1, 11)),
        ("service S extends T {}", "unknown service `T`", (1, 19)),
        (
            "struct A {}\nservice S { A F() throws (1: A a) }",
            "exceptions only",
            (2, 30),
        ),
        (
            "struct TestServiceClient {}\nservice TestService {}",
            "TestServiceClient (a generated name)",
            (2, 9),
        ),
        (
            "service S {\n void Go(),\n void Go_with() }",
            "go_with (a method of SClient)",
            (3, 7),
        ),
        (
            "service S {\n void Connect() }",
            "connect (a method of SClient)",
            (2, 7),
        ),
        ("union U {}", "union `U` has no fields", (1, 7)),
    ];
    for (i, (src, reason, pos)) in cases.iter().enumerate() {
        let e = idl_error(&format!("semantic-{i}"), "a.thrift", &[("a.thrift", src)]);
        assert!(e.to_string().contains(reason), "{src:?}: {e}");
        assert_eq!((e.location.line, e.location.column), *pos, "{src:?}: {e}");
    }
}

#[test]
fn proto_syntax_error() {
    let e = idl_error(
        "proto-syntax",
        "a.proto",
        &[(
            "a.proto",
            "syntax = \"proto3\";\nmessage A {\n  string x = ;\n}\n",
        )],
    );
    assert_eq!(at(&e), ("a.proto".into(), 3, 14));
    assert!(matches!(e.kind, IdlErrorKind::Proto(_)), "{e}");
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn proto_unknown_type() {
    let e = idl_error(
        "proto-unknown",
        "a.proto",
        &[(
            "a.proto",
            "syntax = \"proto3\";\npackage p;\nmessage A {\n  Missing x = 1;\n}\n",
        )],
    );
    assert_eq!(at(&e), ("a.proto".into(), 4, 3));
    assert!(e.to_string().contains("Missing"), "{e}");
}

#[test]
fn proto_missing_import() {
    let e = idl_error(
        "proto-import",
        "a.proto",
        &[("a.proto", "syntax = \"proto3\";\nimport \"nope.proto\";\n")],
    );
    assert_eq!(at(&e), ("a.proto".into(), 2, 1));
    assert_eq!(e.kind, IdlErrorKind::MissingInclude("nope.proto".into()));
}

#[test]
fn builder_errors() {
    let dir = dir_with(
        "builder",
        &[
            ("x/echo.thrift", "struct A {}\n"),
            ("y/echo.proto", "syntax = \"proto3\";\nmessage A {}\n"),
            ("z.idl", ""),
        ],
    );
    let out = dir.join("out");
    let err = Builder::new()
        .out_dir(&out)
        .compile(
            &[dir.join("x/echo.thrift"), dir.join("y/echo.proto")],
            &[dir.join("y")],
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::OutputCollision { ref name, .. } if name == "echo"),
        "{err}"
    );
    // Renamed, both fit in one directory.
    let written = Builder::new()
        .out_dir(&out)
        .compile(&[dir.join("x/echo.thrift")], &[] as &[&str])
        .unwrap();
    let renamed = Builder::new()
        .out_dir(&out)
        .output_name("echo_proto")
        .compile(&[dir.join("y/echo.proto")], &[dir.join("y")])
        .unwrap();
    assert_eq!(written, [out.join("echo.rs")]);
    assert_eq!(renamed, [out.join("echo_proto.rs")]);

    let err = Builder::new()
        .out_dir(&out)
        .output_name("x")
        .compile(
            &[dir.join("x/echo.thrift"), dir.join("y/echo.proto")],
            &[] as &[&str],
        )
        .unwrap_err();
    assert!(matches!(err, Error::OutputNameWithManyFiles(2)), "{err}");
    let err = Builder::new()
        .generate(&dir.join("z.idl"), &[] as &[&str])
        .unwrap_err();
    assert!(matches!(err, Error::UnknownExtension(_)), "{err}");
    let err = Builder::new()
        .generate(&dir.join("missing.thrift"), &[] as &[&str])
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    let err = Builder::new()
        .generate(&dir.join("missing.proto"), &[] as &[&str])
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
}

#[test]
fn proto_root_outside_the_include_dirs_is_found_through_its_directory() {
    let dir = dir_with(
        "proto-outside",
        &[
            (
                "src/a.proto",
                "syntax = \"proto3\";\npackage a;\nimport \"b.proto\";\nmessage A { b.B b = 1; }\n",
            ),
            (
                "lib/b.proto",
                "syntax = \"proto3\";\npackage b;\nmessage B {}\n",
            ),
        ],
    );
    let file = Builder::new()
        .generate(&dir.join("src/a.proto"), &[dir.join("lib")])
        .unwrap();
    assert!(file.code.contains("pub mod b"), "{}", file.code);
    assert_eq!(file.inputs.len(), 2);
}
