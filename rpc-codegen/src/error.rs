//! Typed errors: where an IDL is wrong ([`IdlError`]: file, line, column, reason) and what else
//! can go wrong while generating ([`Error`]).

use std::fmt;
use std::path::PathBuf;

/// A position in an IDL file. Lines and columns start at 1; the column counts characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The file, as it was found (include directory joined with the relative path).
    pub file: PathBuf,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// An error in an IDL file, with the place it was found.
///
/// Displays as one line, `file:line:column: reason`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{location}: {kind}")]
pub struct IdlError {
    /// Where.
    pub location: Location,
    /// What.
    pub kind: IdlErrorKind,
}

/// What is wrong with an IDL. Each displays as a one-line reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum IdlErrorKind {
    /// The text does not follow the grammar.
    #[error("syntax error: expected {expected}, found {found}")]
    Syntax {
        /// What the grammar allows here.
        expected: String,
        /// What the file has instead.
        found: String,
    },
    /// A token that cannot start anything (a stray character, an unterminated string).
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A type name that no definition or include provides.
    #[error("unknown type `{0}`")]
    UnknownType(String),
    /// A constant or enum value name that nothing defines.
    #[error("unknown constant `{0}`")]
    UnknownConstant(String),
    /// A service `extends` a service that nothing defines.
    #[error("unknown service `{0}`")]
    UnknownService(String),
    /// An `include` (thrift) or `import` (proto) names a file that is in neither the including
    /// file's directory nor an include directory.
    #[error("included file `{0}` not found")]
    MissingInclude(String),
    /// `streaming.mode` has a value other than `bidirectional`, `client`, `server`, `unary`.
    #[error("invalid streaming.mode `{0}`: expected bidirectional, client, server or unary")]
    BadStreamingMode(String),
    /// A method with a `streaming.mode` must take exactly one argument.
    #[error("streaming method `{method}` must take exactly 1 argument, it takes {count}")]
    StreamingArity {
        /// The method.
        method: String,
        /// How many arguments it takes.
        count: usize,
    },
    /// Something else the IDL asks for that the generator rejects (the text says what).
    #[error("{0}")]
    Invalid(String),
    /// Two definitions produce the same name.
    #[error("duplicate definition of `{0}`")]
    Duplicate(String),
    /// A constant's value does not fit its type.
    #[error("constant does not match its type: {0}")]
    ConstType(String),
    /// The IDL uses a feature this generator does not support (the text says which).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An error reported by the protobuf compiler (protox).
    #[error("{0}")]
    Proto(String),
}

/// Everything that can fail while generating code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The IDL is wrong.
    #[error(transparent)]
    Idl(#[from] IdlError),
    /// An IDL file could not be read or an output file could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An input file is neither `.thrift` nor `.proto`.
    #[error("{}: unknown IDL kind (expected a .thrift or .proto file)", .0.display())]
    UnknownExtension(PathBuf),
    /// An IDL file was not found (the inputs of `compile`, not includes).
    #[error("{}: file not found", .0.display())]
    NotFound(PathBuf),
    /// Two inputs would be written to the same output file.
    #[error(
        "{} and {} both generate `{name}.rs`: compile one of them with `Builder::output_name`",
        first.display(),
        second.display()
    )]
    OutputCollision {
        /// The output file stem.
        name: String,
        /// The first input.
        first: PathBuf,
        /// The second input.
        second: PathBuf,
    },
    /// `Builder::output_name` was set while compiling more than one file.
    #[error("output_name applies to one IDL file, but {0} were given")]
    OutputNameWithManyFiles(usize),
    /// No output directory: `OUT_DIR` is unset (not in a build script) and none was given.
    #[error("no output directory: OUT_DIR is not set (call Builder::out_dir outside build.rs)")]
    NoOutDir,
    /// prost-build failed on descriptors protox produced (a bug or an unsupported feature).
    #[error("prost-build: {0}")]
    Prost(#[source] std::io::Error),
    /// The generated code did not parse as Rust (a bug in the generator: please report it).
    #[error("generated code for {} does not parse: {source}", file.display())]
    Generated {
        /// The IDL file being generated.
        file: PathBuf,
        /// The parse error.
        #[source]
        source: syn::Error,
    },
}

impl Error {
    /// The IDL error, if this is one.
    pub fn idl(&self) -> Option<&IdlError> {
        match self {
            Error::Idl(e) => Some(e),
            _ => None,
        }
    }
}

/// Maps byte offsets of a source text to lines and columns.
#[derive(Debug, Clone)]
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// 1-based line and character column of byte `offset` in `text`.
    pub(crate) fn position(&self, text: &str, offset: usize) -> (u32, u32) {
        let offset = offset.min(text.len());
        let line = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.starts.get(line).copied().unwrap_or(0);
        let column = text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (to_u32(line + 1), to_u32(column + 1))
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "ab\ncdé f\n\nx";
        let idx = LineIndex::new(text);
        assert_eq!(idx.position(text, 0), (1, 1));
        assert_eq!(idx.position(text, 3), (2, 1));
        // 'é' is two bytes; the space after it is column 4.
        assert_eq!(idx.position(text, 7), (2, 4));
        assert_eq!(idx.position(text, 10), (3, 1));
        assert_eq!(idx.position(text, 11), (4, 1));
        assert_eq!(idx.position(text, 99), (4, 2));
    }
}
