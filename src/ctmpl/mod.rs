//! A consul-template-compatible template engine: Go's text/template language plus
//! consul-template's functions, rendered against a caller-supplied snapshot of Consul data.
//!
//! Users migrating from Docker Flow: Proxy bring their HAProxy snippet templates unchanged:
//!
//! ```
//! use flow_proxy::ctmpl::{DataSource, DataError, ServiceEntry, CatalogService, KvPair, Template};
//!
//! struct Snapshot;
//! impl DataSource for Snapshot {
//!     fn service(&self, name: &str, _tag: Option<&str>) -> Result<Vec<ServiceEntry>, DataError> {
//!         Ok(vec![ServiceEntry {
//!             node: "proxy".into(),
//!             id: format!("{name}_1"),
//!             name: name.into(),
//!             node_address: "10.0.0.1".into(),
//!             port: 32768,
//!             ..Default::default()
//!         }])
//!     }
//!     fn services(&self) -> Result<Vec<CatalogService>, DataError> { Ok(vec![]) }
//!     fn key(&self, _path: &str) -> Result<Option<String>, DataError> { Ok(None) }
//!     fn list(&self, _prefix: &str) -> Result<Vec<KvPair>, DataError> { Ok(vec![]) }
//! }
//!
//! let t = Template::parse(
//!     "go-demo-be",
//!     "backend go-demo-be\n{{- range $i, $e := service \"go-demo\" \"any\" }}\n    server {{$e.Node}}_{{$i}}_{{$e.Port}} {{$e.Address}}:{{$e.Port}} check\n{{- end }}",
//! ).unwrap();
//! let out = t.render(&Snapshot).unwrap();
//! assert_eq!(out.text, "backend go-demo-be\n    server proxy_0_32768 10.0.0.1:32768 check");
//! assert_eq!(out.deps.services.len(), 1);
//! ```
//!
//! # Language
//!
//! Go text/template: text and `{{ }}` actions (custom delimiters through
//! [`Template::parse_with_delimiters`]); trim markers `{{- ` and ` -}}`; comments `{{/* */}}`;
//! `if`/`else if`/`else`, `with`/`else with`/`else`, `range` over lists, maps (sorted keys) and
//! ints with `$e :=` or `$i, $e :=` and an `else` branch, `break`, `continue`; variables `$x :=`,
//! `$x =` with Go's scoping, `$`; pipelines, parentheses, fields `.A.B`, `$e.A`, `(x).A`, map
//! keys as fields; string (with Go escapes), raw string, char, int, float, bool and nil
//! literals. `define`, `template` and `block` are rejected at parse time.
//!
//! Functions: Go's `and or not len index slice print printf println eq ne lt le gt ge`;
//! consul-template's `service services key keyOrDefault keyExists ls tree safeLs safeTree byTag
//! byKey join split contains containsAll containsAny containsNone containsNotAll in toLower
//! toUpper toTitle trimSpace trim trimPrefix trimSuffix replaceAll indent parseInt parseUint
//! parseFloat parseBool add subtract multiply divide modulo minimum maximum`. Functions that
//! need the environment, clock, files, programs or Vault (`env`, `timestamp`, `file`,
//! `plugin`, `secret`...) are rejected at parse time with the reason.
//!
//! Dot and `$` are nil while rendering, as in consul-template. A render is bounded: nesting
//! depth, evaluation steps and output size are limited.
//!
//! # Modules
//!
//! `lexer` → `parser` → `ast` (parsed once); `eval` walks the tree with `value`s, calling
//! `funcs` (Go built-ins and pure helpers, with `printf`) and `consul_funcs` (data functions
//! over [`DataSource`], recording [`Dependencies`]).
//!
//! Architecture invariant: this module is pure. It performs no IO, reads no environment, clock
//! or files, and does not depend on tokio; all data arrives through [`DataSource`].

mod ast;
mod consul_funcs;
mod data;
mod error;
mod eval;
mod funcs;
mod lexer;
mod parser;
mod printf;
mod value;

pub use data::{
    CatalogService, DataError, DataSource, Dependencies, HealthCheck, KvPair, ServiceEntry,
    ServiceQuery, StaticSource, Weights,
};
pub use error::{ParseError, RenderError, RenderErrorKind};

/// Maximum template source size, in bytes.
pub const MAX_SOURCE_LEN: usize = 4 * 1024 * 1024;

/// A parsed template, ready to be rendered any number of times. `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    nodes: Vec<ast::Node>,
}

/// The output of a render: the text and everything the template read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub deps: Dependencies,
}

impl Template {
    /// Parses `source` with the standard `{{ }}` delimiters; `name` identifies the template in
    /// error messages.
    pub fn parse(name: &str, source: &str) -> Result<Template, ParseError> {
        Self::parse_with_delimiters(name, source, "", "")
    }

    /// Parses `source` with custom action delimiters, like consul-template's
    /// `left_delimiter`/`right_delimiter` settings; empty strings mean the defaults.
    pub fn parse_with_delimiters(
        name: &str,
        source: &str,
        left: &str,
        right: &str,
    ) -> Result<Template, ParseError> {
        let left = if left.is_empty() {
            lexer::DEFAULT_LEFT
        } else {
            left
        };
        let right = if right.is_empty() {
            lexer::DEFAULT_RIGHT
        } else {
            right
        };
        let fail = |line, column, message: String| ParseError {
            template: name.to_string(),
            line,
            column,
            message,
        };
        if source.len() > MAX_SOURCE_LEN {
            return Err(fail(
                1,
                1,
                format!("template is larger than {MAX_SOURCE_LEN} bytes"),
            ));
        }
        let tokens =
            lexer::lex_with(source, left, right).map_err(|e| fail(e.line, e.column, e.message))?;
        let nodes = parser::parse(tokens).map_err(|e| fail(e.pos.line, e.pos.column, e.message))?;
        Ok(Template {
            name: name.to_string(),
            nodes,
        })
    }

    /// The name given to [`Template::parse`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renders against `source`. Dot and `$` are nil, as in consul-template.
    pub fn render(&self, source: &dyn DataSource) -> Result<Rendered, RenderError> {
        match eval::execute(&self.nodes, source) {
            Ok((text, deps)) => Ok(Rendered { text, deps }),
            Err(failure) => {
                let (e, deps) = *failure;
                Err(RenderError {
                    template: self.name.clone(),
                    line: e.pos.line,
                    column: e.pos.column,
                    kind: e.kind,
                    deps: Box::new(deps),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
