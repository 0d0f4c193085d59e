//! Declared exceptions (thrift `throws`) as typed errors.

use std::fmt;

use crate::status::Status;

/// The error of a call whose IDL method declares exceptions: either one of the declared
/// exceptions (`E`, a generated enum of them) or a framework/application [`Status`].
/// Methods without declared exceptions use plain [`Status`] instead.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodError<E> {
    /// A declared exception, carried in the response's Result struct.
    Declared(E),
    /// Any other failure.
    Status(Status),
}

impl<E> From<Status> for MethodError<E> {
    fn from(s: Status) -> Self {
        MethodError::Status(s)
    }
}

impl<E: fmt::Debug> fmt::Display for MethodError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MethodError::Declared(e) => write!(f, "declared exception: {e:?}"),
            MethodError::Status(s) => fmt::Display::fmt(s, f),
        }
    }
}

impl<E: fmt::Debug> std::error::Error for MethodError<E> {}
