//! Errors of the Consul client and watchers, classified for retrying.
//!
//! Owns the error type and its `is_retryable` classification; it must not log or retry.

use super::wire::TxnErrorWire;

/// One failed operation of a rolled-back transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOpError {
    /// Index of the failing operation in the request.
    pub op_index: usize,
    /// Consul's message.
    pub what: String,
}

impl From<TxnErrorWire> for TxnOpError {
    fn from(w: TxnErrorWire) -> Self {
        TxnOpError {
            op_index: w.op_index,
            what: w.what,
        }
    }
}

/// An error talking to Consul.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// No address accepted a connection.
    #[error("cannot connect to Consul at {address}: {source}")]
    Connect {
        /// The last address tried.
        address: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The request timed out.
    #[error("request to Consul timed out")]
    Timeout,
    /// Another transport failure (connection reset, broken body, ...).
    #[error("transport error talking to Consul: {0}")]
    Transport(#[source] reqwest::Error),
    /// Consul answered with an unexpected status code.
    #[error("Consul answered {status}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Plain-text error body (trimmed, possibly truncated).
        body: String,
    },
    /// The response could not be decoded.
    #[error("cannot decode Consul response for {what}: {reason}")]
    Decode {
        /// The endpoint or value.
        what: String,
        /// Why.
        reason: String,
    },
    /// A transaction was rolled back (409).
    #[error("transaction rolled back: {}", describe_txn(.errors))]
    TxnConflict {
        /// Consul's `Errors` list.
        errors: Vec<TxnOpError>,
    },
    /// A request argument was rejected before sending.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The request could not be built.
    #[error("cannot build request: {0}")]
    Build(String),
}

fn describe_txn(errors: &[TxnOpError]) -> String {
    errors
        .iter()
        .map(|e| format!("op {}: {}", e.op_index, e.what))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConsulError {
    /// Whether retrying later may succeed: connect failures, timeouts, transport errors, 5xx and
    /// 429. Other 4xx, decode errors, conflicts and invalid arguments are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConsulError::Connect { .. } | ConsulError::Timeout | ConsulError::Transport(_) => true,
            ConsulError::Status { status, .. } => *status >= 500 || *status == 429,
            ConsulError::Decode { .. }
            | ConsulError::TxnConflict { .. }
            | ConsulError::InvalidArgument(_)
            | ConsulError::Build(_) => false,
        }
    }

    pub(crate) fn decode(what: impl Into<String>, reason: impl ToString) -> Self {
        ConsulError::Decode {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let status = |s| ConsulError::Status {
            status: s,
            body: String::new(),
        };
        assert!(ConsulError::Timeout.is_retryable());
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(403).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!ConsulError::decode("x", "y").is_retryable());
        assert!(!ConsulError::TxnConflict { errors: vec![] }.is_retryable());
    }
}
