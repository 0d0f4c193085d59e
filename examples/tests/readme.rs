//! The README's quick start is `examples/hello.rs`, verbatim, so it compiles and runs with
//! `cargo run -p examples --example hello`; its generic-calls example is `examples/generic.rs`.

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
fn the_readme_generic_example_is_the_generic_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let example = std::fs::read_to_string(format!("{root}/examples/examples/generic.rs"))
        .expect("examples/generic.rs");
    assert!(
        readme.contains(&format!("```rust\n{example}```")),
        "README.md's generic example differs from examples/examples/generic.rs: copy the file into it"
    );
}
