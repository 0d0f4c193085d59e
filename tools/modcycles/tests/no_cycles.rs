//! No import circle among the top-level modules of the workspace's crates (run by
//! `cargo test`, so by `.ci/run`). To cover one more crate, add it to [`CRATES`].

use std::path::Path;

/// The crates checked, by directory under the workspace root.
const CRATES: &[&str] = &[
    "rpc-core",
    "rpc-transport-ttheader",
    "rpc-transport-grpc",
    "rpc-transport-shm",
    "rpc-codegen",
    "rpc-registry-etcd",
    "rpc-grpc-services",
];

#[test]
fn no_import_circle_among_top_level_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut failures = Vec::new();
    for name in CRATES {
        let g = modcycles::graph(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        for c in modcycles::cycles(&g) {
            failures.push(format!("{name}: {c}"));
        }
    }
    assert!(
        failures.is_empty(),
        "import circles among top-level modules:\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_circle_is_found_and_printed() {
    let dir = std::env::temp_dir().join(format!("modcycles-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("b")).expect("temp dir");
    std::fs::write(
        src.join("lib.rs"),
        "mod a;\nmod b;\nmod c;\npub use c::Thing;\n",
    )
    .expect("write");
    std::fs::write(src.join("a.rs"), "use crate::b::X;\n").expect("write");
    std::fs::write(src.join("b/mod.rs"), "mod inner;\n").expect("write");
    // `super::super::Thing` from b::inner is crate::Thing, re-exported from c.
    std::fs::write(
        src.join("b/inner.rs"),
        "pub struct X;\nfn f() { let _ = super::super::Thing; }\n",
    )
    .expect("write");
    std::fs::write(
        src.join("c.rs"),
        "pub struct Thing;\nfn g() { tracing::info!(\"{}\", crate::a::Y); }\n",
    )
    .expect("write");
    let g = modcycles::graph(&dir).expect("parses");
    let found = modcycles::cycles(&g);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("a -> b -> c -> a"), "{}", found[0]);
}
