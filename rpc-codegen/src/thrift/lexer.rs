//! Thrift IDL tokens with byte spans, and the comments between them (kept for docs).

use std::fmt;

use crate::error::IdlErrorKind;

/// A byte range of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// Identifiers, including dotted ones (`base.Request`, `streaming.mode`) and keywords.
    Ident(String),
    Int(i64),
    Double(f64),
    /// A quoted literal, escapes processed.
    Literal(String),
    /// One of `{ } ( ) [ ] < > , ; : = *`.
    Punct(char),
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Int(i) => write!(f, "integer {i}"),
            Tok::Double(d) => write!(f, "number {d}"),
            Tok::Literal(s) => write!(f, "string {s:?}"),
            Tok::Punct(c) => write!(f, "`{c}`"),
            Tok::Eof => f.write_str("end of file"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) span: Span,
    /// 0-based line of the token's start.
    pub(crate) line: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Comment {
    pub(crate) text: String,
    pub(crate) span: Span,
    /// 0-based line of the comment's first character.
    pub(crate) line: usize,
}

/// The tokens of a file (ending with [`Tok::Eof`]) and its comments, or the first lexical
/// error with its byte offset.
pub(crate) fn lex(src: &str) -> Result<(Vec<Token>, Vec<Comment>), (usize, IdlErrorKind)> {
    let mut lx = Lexer {
        src,
        bytes: src.as_bytes(),
        pos: 0,
        line: 0,
        tokens: Vec::new(),
        comments: Vec::new(),
    };
    lx.run()?;
    Ok((lx.tokens, lx.comments))
}

struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: usize,
    tokens: Vec<Token>,
    comments: Vec<Comment>,
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) {
        if self.peek(0) == Some(b'\n') {
            self.line += 1;
        }
        self.pos += 1;
    }

    /// At `+`, `-` or `.`: whether a number starts here (`-1`, `+.5`, `.5`).
    fn starts_number(&self) -> bool {
        let digit = |ahead| self.peek(ahead).is_some_and(|d: u8| d.is_ascii_digit());
        match self.peek(0) {
            Some(b'.') => digit(1),
            _ => digit(1) || (self.peek(1) == Some(b'.') && digit(2)),
        }
    }

    fn run(&mut self) -> Result<(), (usize, IdlErrorKind)> {
        while let Some(c) = self.peek(0) {
            let start = self.pos;
            let line = self.line;
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => self.bump(),
                b'/' if self.peek(1) == Some(b'/') => self.line_comment(2),
                b'#' => self.line_comment(1),
                b'/' if self.peek(1) == Some(b'*') => self.block_comment()?,
                b'"' | b'\'' => {
                    let s = self.literal(c)?;
                    self.push(Tok::Literal(s), start, line);
                }
                b'0'..=b'9' => {
                    let t = self.number()?;
                    self.push(t, start, line);
                }
                b'+' | b'-' | b'.' if self.starts_number() => {
                    let t = self.number()?;
                    self.push(t, start, line);
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    // Dots join scoped names (`base.Request`); a slash followed by a name
                    // character continues Go import paths in `namespace go a.com/b/c`.
                    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
                    while self.peek(0).is_some_and(|c| word(c) || c == b'.')
                        || (self.peek(0) == Some(b'/') && self.peek(1).is_some_and(word))
                    {
                        self.bump();
                    }
                    let s = &self.src[start..self.pos];
                    self.push(Tok::Ident(s.to_owned()), start, line);
                }
                b'{' | b'}' | b'(' | b')' | b'[' | b']' | b'<' | b'>' | b',' | b';' | b':'
                | b'=' | b'*' => {
                    self.bump();
                    self.push(Tok::Punct(char::from(c)), start, line);
                }
                _ => {
                    let ch = self.src[start..].chars().next().unwrap_or('?');
                    return Err((
                        start,
                        IdlErrorKind::InvalidToken(format!("unexpected {ch:?}")),
                    ));
                }
            }
        }
        let end = self.src.len();
        self.tokens.push(Token {
            tok: Tok::Eof,
            span: Span { start: end, end },
            line: self.line,
        });
        Ok(())
    }

    fn push(&mut self, tok: Tok, start: usize, line: usize) {
        self.tokens.push(Token {
            tok,
            span: Span {
                start,
                end: self.pos,
            },
            line,
        });
    }

    fn line_comment(&mut self, marker: usize) {
        let start = self.pos;
        let line = self.line;
        while self.peek(0).is_some_and(|c| c != b'\n') {
            self.bump();
        }
        let body = &self.src[start + marker..self.pos];
        // `///` and `//!` are common in IDLs written by Rust users; drop the extra marker.
        let body = match marker {
            2 => body
                .strip_prefix('/')
                .or_else(|| body.strip_prefix('!'))
                .unwrap_or(body),
            _ => body,
        };
        let text = body.trim().to_owned();
        self.comments.push(Comment {
            text,
            span: Span {
                start,
                end: self.pos,
            },
            line,
        });
    }

    fn block_comment(&mut self) -> Result<(), (usize, IdlErrorKind)> {
        let start = self.pos;
        let line = self.line;
        self.bump();
        self.bump();
        loop {
            match self.peek(0) {
                None => {
                    return Err((
                        start,
                        IdlErrorKind::InvalidToken("unterminated block comment".into()),
                    ))
                }
                Some(b'*') if self.peek(1) == Some(b'/') => {
                    self.bump();
                    self.bump();
                    break;
                }
                Some(_) => self.bump(),
            }
        }
        let body = &self.src[start + 2..self.pos - 2];
        let text = body
            .lines()
            .map(|l| {
                let l = l.trim();
                let l = l.strip_prefix('*').unwrap_or(l);
                l.strip_prefix(' ').unwrap_or(l).trim_end()
            })
            .collect::<Vec<_>>()
            .join("\n")
            .trim_matches('\n')
            .to_owned();
        self.comments.push(Comment {
            text,
            span: Span {
                start,
                end: self.pos,
            },
            line,
        });
        Ok(())
    }

    fn literal(&mut self, quote: u8) -> Result<String, (usize, IdlErrorKind)> {
        let start = self.pos;
        self.bump();
        let mut out = String::new();
        loop {
            let rest = &self.src[self.pos..];
            let Some(ch) = rest.chars().next() else {
                return Err((
                    start,
                    IdlErrorKind::InvalidToken("unterminated string literal".into()),
                ));
            };
            if ch == char::from(quote) {
                self.bump();
                return Ok(out);
            }
            if ch == '\\' {
                let next = rest[1..].chars().next();
                let escaped = match next {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some('\\') => '\\',
                    Some('"') => '"',
                    Some('\'') => '\'',
                    // Anything else is kept as written (Apache Thrift does not process escapes).
                    _ => {
                        out.push('\\');
                        self.bump();
                        continue;
                    }
                };
                out.push(escaped);
                self.bump();
                self.bump();
                continue;
            }
            out.push(ch);
            for _ in 0..ch.len_utf8() {
                self.bump();
            }
        }
    }

    fn number(&mut self) -> Result<Tok, (usize, IdlErrorKind)> {
        let start = self.pos;
        if matches!(self.peek(0), Some(b'+' | b'-')) {
            self.bump();
        }
        let digits_start = self.pos;
        if self.peek(0) == Some(b'0') && matches!(self.peek(1), Some(b'x' | b'X')) {
            self.bump();
            self.bump();
            while self.peek(0).is_some_and(|c| c.is_ascii_hexdigit()) {
                self.bump();
            }
            let text = &self.src[digits_start + 2..self.pos];
            let neg = self.bytes[start] == b'-';
            return i64::from_str_radix(text, 16)
                .ok()
                .and_then(|v| if neg { v.checked_neg() } else { Some(v) })
                .map(Tok::Int)
                .ok_or_else(|| {
                    (
                        start,
                        IdlErrorKind::InvalidToken(format!(
                            "invalid hex integer `{}`",
                            &self.src[start..self.pos]
                        )),
                    )
                });
        }
        let mut is_double = false;
        while let Some(c) = self.peek(0) {
            match c {
                b'0'..=b'9' => self.bump(),
                b'.' if !is_double => {
                    is_double = true;
                    self.bump();
                }
                b'e' | b'E' => {
                    is_double = true;
                    self.bump();
                    if matches!(self.peek(0), Some(b'+' | b'-')) {
                        self.bump();
                    }
                }
                _ => break,
            }
        }
        // An identifier character right after a number (`1abc`) is not a valid token.
        if self
            .peek(0)
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        {
            return Err((
                start,
                IdlErrorKind::InvalidToken(format!(
                    "invalid number `{}`",
                    &self.src[start..=self.pos]
                )),
            ));
        }
        let text = &self.src[start..self.pos];
        let bad = || {
            (
                start,
                IdlErrorKind::InvalidToken(format!("invalid number `{text}`")),
            )
        };
        if is_double {
            text.parse::<f64>().map(Tok::Double).map_err(|_| bad())
        } else {
            text.parse::<i64>().map(Tok::Int).map_err(|_| bad())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex(src).unwrap().0.into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn tokens_and_comments() {
        let (tokens, comments) =
            lex("// lead\nstruct A { 1: optional i32 x = -5, } # tail\n/** doc\n * more */")
                .unwrap();
        let kinds: Vec<_> = tokens.iter().map(|t| t.tok.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                Tok::Ident("struct".into()),
                Tok::Ident("A".into()),
                Tok::Punct('{'),
                Tok::Int(1),
                Tok::Punct(':'),
                Tok::Ident("optional".into()),
                Tok::Ident("i32".into()),
                Tok::Ident("x".into()),
                Tok::Punct('='),
                Tok::Int(-5),
                Tok::Punct(','),
                Tok::Punct('}'),
                Tok::Eof,
            ]
        );
        let texts: Vec<_> = comments.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, vec!["lead", "tail", "doc\nmore"]);
        assert_eq!(tokens[1].line, 1);
    }

    #[test]
    fn numbers_literals_and_dotted_names() {
        assert_eq!(
            toks(r#"0x1F 1.5 -2e3 "a\"b" 'c' streaming.mode"#),
            vec![
                Tok::Int(31),
                Tok::Double(1.5),
                Tok::Double(-2000.0),
                Tok::Literal("a\"b".into()),
                Tok::Literal("c".into()),
                Tok::Ident("streaming.mode".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn errors_have_offsets() {
        assert_eq!(lex("struct A $").unwrap_err().0, 9);
        assert!(lex("\"open").is_err());
        assert!(lex("/* open").is_err());
        assert!(lex("99999999999999999999").is_err());
        assert!(lex("1abc").is_err());
    }
}
