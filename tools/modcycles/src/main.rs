//! `cargo run -p modcycles -- CRATE_DIR...`: prints each crate's top-level module graph and
//! its import circles; exits with 1 if there is any.

#![forbid(unsafe_code)]

fn main() {
    let mut circles = 0;
    for dir in std::env::args().skip(1) {
        let g = match modcycles::graph(std::path::Path::new(&dir)) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("{dir}: {e}");
                std::process::exit(2);
            }
        };
        println!("{dir}:");
        for (from, to) in &g.edges {
            let to: Vec<&str> = to.keys().map(String::as_str).collect();
            println!("  {from} -> {}", to.join(", "));
        }
        for c in modcycles::cycles(&g) {
            circles += 1;
            println!("  CIRCLE {c}");
        }
    }
    if circles > 0 {
        std::process::exit(1);
    }
}
