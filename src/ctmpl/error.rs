//! Error types of the template engine: parse errors and render errors, each naming the template
//! and the line (and column) of the offending text. No IO.

use super::data::{DataError, Dependencies};

/// A template could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {template}: line {line}, column {column}: {message}")]
pub struct ParseError {
    /// The template's name as given to [`super::Template::parse`].
    pub template: String,
    /// 1-based line of the offending text.
    pub line: usize,
    /// 1-based column (in characters) of the offending text.
    pub column: usize,
    pub message: String,
}

/// Why a render failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderErrorKind {
    /// `key` read a key that does not exist (consul-template would wait for it).
    #[error("key {0:?} does not exist")]
    MissingKey(String),
    /// `safeLs`/`safeTree` found nothing under a prefix (consul-template would wait).
    #[error("no keys under prefix {0:?}")]
    EmptyPrefix(String),
    /// The data source failed.
    #[error("data source: {0}")]
    Data(#[source] DataError),
    /// The template failed while executing (bad types, wrong arguments, failing function).
    #[error("{0}")]
    Exec(String),
    /// The template exceeded a safety limit (output size or evaluation steps).
    #[error("limit exceeded: {0}")]
    Limit(String),
}

/// A template failed to render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {template}: line {line}, column {column}: {kind}")]
pub struct RenderError {
    pub template: String,
    pub line: usize,
    pub column: usize,
    pub kind: RenderErrorKind,
    /// What the template had read before it failed: watching these (a missing key in
    /// particular) tells the caller when a new attempt can succeed.
    pub deps: Box<Dependencies>,
}
