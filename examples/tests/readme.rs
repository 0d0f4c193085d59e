//! The README's quick start is `examples/hello.rs`, verbatim, so it compiles and runs with
//! `cargo run -p examples --example hello`.

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
