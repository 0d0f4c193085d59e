//! The README's quick start is `examples/hello.rs`, verbatim, so it compiles and runs with
//! `cargo run -p examples --example hello`; the guide's generic-calls example is
//! `examples/generic.rs`. (The `guide` crate compiles and runs both copies as doctests too.)

#[test]
fn the_readme_quick_start_is_the_hello_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let hello = std::fs::read_to_string(format!("{root}/examples/examples/hello.rs"))
        .expect("examples/hello.rs");
    assert!(
        readme.contains(&format!("```rust\n{hello}```")),
        "README.md's quick start differs from examples/examples/hello.rs: copy the file into it"
    );
}

#[test]
fn the_guide_generic_example_is_the_generic_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let chapter = format!("{root}/docs/guide/10-generic-calls.md");
    let guide = std::fs::read_to_string(&chapter).expect("the generic calls chapter");
    let example = std::fs::read_to_string(format!("{root}/examples/examples/generic.rs"))
        .expect("examples/generic.rs");
    assert!(
        guide.contains(&format!("```rust\n{example}```")),
        "{chapter}'s example differs from examples/examples/generic.rs: copy the file into it"
    );
}

#[test]
fn the_readme_is_a_front_page() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(
        lines < 150,
        "README.md has {lines} lines: move the details into docs/guide"
    );
    for command in [
        "cargo run --release -p examples --bin echo\n",
        "cargo test --workspace\n",
    ] {
        assert!(readme.contains(command), "README.md lost `{command}`");
    }
}
