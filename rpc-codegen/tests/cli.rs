//! The `rpc-codegen` CLI writes what the builder generates, and `--check` detects drift.

use std::path::Path;
use std::process::Command;

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rpc-codegen"))
}

#[test]
fn writes_the_golden_code_and_checks_it() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-out");
    let _ = std::fs::remove_dir_all(&out);
    let idl = tests.join("idl");

    let status = cli()
        .arg("-I")
        .arg(&idl)
        .arg("-o")
        .arg(&out)
        .arg(idl.join("echo.thrift"))
        .status()
        .unwrap();
    assert!(status.success());
    let status = cli()
        .args(["--name", "echo_proto", "-I"])
        .arg(&idl)
        .arg("-o")
        .arg(&out)
        .arg(idl.join("echo.proto"))
        .status()
        .unwrap();
    assert!(status.success());
    for (written, golden) in [
        ("echo.rs", "echo_thrift.rs"),
        ("echo_proto.rs", "echo_proto.rs"),
    ] {
        assert_eq!(
            std::fs::read_to_string(out.join(written)).unwrap(),
            std::fs::read_to_string(tests.join("golden").join(golden)).unwrap(),
            "{written}"
        );
    }

    let check = |out: &Path| {
        cli()
            .arg("--check")
            .arg("-o")
            .arg(out)
            .arg(idl.join("echo.thrift"))
            .output()
            .unwrap()
    };
    assert!(check(&out).status.success());
    std::fs::write(out.join("echo.rs"), "// stale\n").unwrap();
    let stale = check(&out);
    assert!(!stale.status.success());
    assert!(String::from_utf8_lossy(&stale.stderr).contains("out of date"));
}

#[test]
fn reports_idl_errors_and_usage() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bad.thrift"), "struct A {\n  1: Nope x\n}\n").unwrap();
    let out = cli()
        .arg("-o")
        .arg(&dir)
        .arg(dir.join("bad.thrift"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.thrift:2:6: unknown type `Nope`"), "{err}");

    let usage = cli().output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(cli().arg("--help").output().unwrap().status.success());
}
