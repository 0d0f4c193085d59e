//! IDL names to Rust names: `PingPong` → `ping_pong`, `test_service` → `TestService`,
//! keywords made raw (`type` → `r#type`) or suffixed where raw is impossible (`self` → `self_`).

use heck::{ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};

/// Strict and reserved keywords of Rust 2021 (`r#` works for all but the four below).
const KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "else", "enum", "extern", "false", "fn", "for", "if",
    "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static",
    "struct", "trait", "true", "type", "unsafe", "use", "where", "while", "async", "await", "dyn",
    "abstract", "become", "box", "do", "final", "macro", "override", "priv", "typeof", "unsized",
    "virtual", "yield", "try", "gen",
];

/// Keywords that cannot be raw identifiers.
const NOT_RAW: &[&str] = &["self", "Self", "super", "crate", "_"];

/// Makes `name` a valid identifier: `r#name` for keywords, `name_` where raw is not allowed.
pub(crate) fn escape(name: String) -> String {
    if NOT_RAW.contains(&name.as_str()) {
        format!("{name}_")
    } else if KEYWORDS.contains(&name.as_str()) {
        format!("r#{name}")
    } else if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        format!("_{name}")
    } else {
        name
    }
}

/// `fooBar` / `FooBar` → `foo_bar` (escaped).
pub(crate) fn snake(name: &str) -> String {
    escape(name.to_snake_case())
}

/// `foo_bar` → `FooBar` (escaped).
pub(crate) fn camel(name: &str) -> String {
    escape(name.to_upper_camel_case())
}

/// `fooBar` → `FOO_BAR` (escaped).
pub(crate) fn shouty(name: &str) -> String {
    escape(name.to_shouty_snake_case())
}

/// A module name for one package segment.
pub(crate) fn module(segment: &str) -> String {
    snake(segment)
}

/// The identifier of an escaped name as a token.
pub(crate) fn ident(name: &str) -> proc_macro2::Ident {
    match name.strip_prefix("r#") {
        Some(raw) => proc_macro2::Ident::new_raw(raw, proc_macro2::Span::call_site()),
        None => proc_macro2::Ident::new(name, proc_macro2::Span::call_site()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventions() {
        assert_eq!(snake("PingPong"), "ping_pong");
        assert_eq!(snake("EchoClient"), "echo_client");
        assert_eq!(snake("sleep_ms"), "sleep_ms");
        assert_eq!(snake("type"), "r#type");
        assert_eq!(snake("self"), "self_");
        assert_eq!(camel("TestService"), "TestService");
        assert_eq!(camel("test_service"), "TestService");
        assert_eq!(shouty("Red"), "RED");
        assert_eq!(shouty("maxSize"), "MAX_SIZE");
        assert_eq!(ident("r#type").to_string(), "r#type");
    }
}
