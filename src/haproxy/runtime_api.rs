//! Client for the HAProxy runtime API (the `stats socket` declared in `global`).
//!
//! Owns: sending many commands on **one** connection and returning each command's
//! answer. It uses the interactive `prompt` mode: `prompt`, then one command per line,
//! then `quit`; HAProxy prints a `> ` prompt after every answer, which is what splits
//! the answers apart (the `;`-separated non-interactive form gives no reliable
//! boundary: some error answers carry no terminating empty line).
//!
//! Must not: build commands from unvalidated input. Callers pass finished command
//! strings; this client only rejects characters that would break the framing
//! (newlines and `;`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::socket;

/// Errors from the runtime API.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeApiError {
    /// A command contains a newline, carriage return or `;`, which would split it.
    #[error("command {0:?} contains a newline or ';'")]
    InvalidCommand(String),
    /// Connecting, writing or reading failed.
    #[error("runtime API {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The number of answers does not match the number of commands (the connection
    /// was cut, or an answer contained a line starting with the prompt).
    #[error("runtime API returned {got} answers for {sent} commands")]
    Framing {
        /// Commands sent.
        sent: usize,
        /// Answers parsed.
        got: usize,
    },
    /// HAProxy answered a command with an error message.
    #[error("runtime command {command:?} failed: {answer}")]
    CommandFailed {
        /// The command.
        command: String,
        /// HAProxy's answer.
        answer: String,
    },
}

/// One command and HAProxy's answer to it (trailing empty lines removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandAnswer {
    /// The command as sent.
    pub command: String,
    /// The answer text.
    pub output: String,
}

/// Answers from HAProxy 2.6 that mean the command was not applied.
const ERROR_MARKERS: &[&str] = &[
    "Unknown command",
    "No such",
    "Require 'admin' level",
    "Require 'operator' level",
    "Permission denied",
    "Invalid",
    "invalid",
    "Missing",
    "missing",
    "requires",
    "Can't",
    "cannot",
    "Cannot",
    "not found",
    "empty or preceded by garbage",
    "failed",
    "only accepts",
    "not allowed",
];

impl CommandAnswer {
    /// Heuristic: true when the answer looks like one of HAProxy's error messages.
    /// Successful `set server ... state/weight` answer nothing; `set server ... addr`
    /// answers a sentence describing the change.
    pub fn looks_like_error(&self) -> bool {
        let first = self.output.lines().next().unwrap_or("");
        ERROR_MARKERS.iter().any(|m| first.contains(m))
    }
}

/// Client for the runtime API socket.
#[derive(Debug, Clone)]
pub struct RuntimeApi {
    path: PathBuf,
    timeout: Duration,
}

impl RuntimeApi {
    /// A client for the socket at `path`, with a 10 s bound per exchange.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            timeout: Duration::from_secs(10),
        }
    }

    /// Changes the bound on one exchange.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends all `commands` on one connection and returns one answer per command, in
    /// order. Answers are returned as they are, errors included.
    pub async fn execute<S: AsRef<str>>(
        &self,
        commands: &[S],
    ) -> Result<Vec<CommandAnswer>, RuntimeApiError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let mut request = String::from("prompt\n");
        for c in commands {
            let c = c.as_ref();
            if c.contains(['\n', '\r', ';']) {
                return Err(RuntimeApiError::InvalidCommand(c.to_owned()));
            }
            request.push_str(c);
            request.push('\n');
        }
        request.push_str("quit\n");
        let bytes = socket::exchange(&self.path, request.as_bytes(), self.timeout)
            .await
            .map_err(|source| RuntimeApiError::Io {
                path: self.path.clone(),
                source,
            })?;
        let outputs = split_prompt_answers(&String::from_utf8_lossy(&bytes));
        if outputs.len() != commands.len() {
            return Err(RuntimeApiError::Framing {
                sent: commands.len(),
                got: outputs.len(),
            });
        }
        Ok(commands
            .iter()
            .zip(outputs)
            .map(|(c, output)| CommandAnswer {
                command: c.as_ref().to_owned(),
                output,
            })
            .collect())
    }

    /// Like [`RuntimeApi::execute`], but fails on the first answer that looks like an
    /// error (see [`CommandAnswer::looks_like_error`]). All commands were still sent.
    pub async fn execute_checked<S: AsRef<str>>(
        &self,
        commands: &[S],
    ) -> Result<Vec<CommandAnswer>, RuntimeApiError> {
        let answers = self.execute(commands).await?;
        if let Some(bad) = answers.iter().find(|a| a.looks_like_error()) {
            return Err(RuntimeApiError::CommandFailed {
                command: bad.command.clone(),
                answer: bad.output.clone(),
            });
        }
        Ok(answers)
    }

    /// `show servers state` (the format the `server-state-file` expects).
    pub async fn show_servers_state(&self) -> Result<String, RuntimeApiError> {
        let mut answers = self.execute(&["show servers state"]).await?;
        let text = answers.pop().map(|a| a.output).unwrap_or_default();
        Ok(format!("{text}\n"))
    }

    /// `show stat` as CSV.
    pub async fn show_stat(&self) -> Result<String, RuntimeApiError> {
        let mut answers = self.execute(&["show stat"]).await?;
        Ok(answers.pop().map(|a| a.output).unwrap_or_default())
    }
}

/// Splits prompt-mode output into the answers of the commands that followed `prompt`.
///
/// The stream looks like `<answer to prompt>> <answer 1>> <answer 2>> ...`, where every
/// `> ` starts a line. The first chunk (the answer to `prompt` itself) is dropped, and
/// so is whatever follows the last prompt (the answer to `quit`, which is nothing).
pub(crate) fn split_prompt_answers(output: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    let mut at_line_start = true;
    let mut rest = output;
    while !rest.is_empty() {
        if at_line_start && let Some(after) = rest.strip_prefix("> ") {
            chunks.push(std::mem::take(&mut current));
            rest = after;
            at_line_start = false;
            continue;
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            current.push(c);
            at_line_start = c == '\n';
        }
        rest = chars.as_str();
    }
    // chunks[0] answers `prompt`; the trailing `current` answers `quit`.
    chunks
        .into_iter()
        .skip(1)
        .map(|c| c.trim_end_matches('\n').to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_observed_prompt_output() {
        // Captured from HAProxy 2.6.12: prompt; set ready; unknown server; show servers
        // state; bad weight; then quit.
        let out = "\n> \n> No such server.\n\n> 1\n# be_id be_name\n3 be 1 s1\n\n> Empty weight string empty or preceded by garbage\n> ";
        let answers = split_prompt_answers(out);
        assert_eq!(
            answers,
            vec![
                "".to_owned(),
                "No such server.".to_owned(),
                "1\n# be_id be_name\n3 be 1 s1".to_owned(),
                "Empty weight string empty or preceded by garbage".to_owned(),
            ]
        );
    }

    #[test]
    fn error_heuristic() {
        let a = |s: &str| CommandAnswer {
            command: "x".into(),
            output: s.into(),
        };
        assert!(a("No such server.").looks_like_error());
        assert!(
            a("Unknown command. Please enter one of the following commands only :")
                .looks_like_error()
        );
        assert!(!a("").looks_like_error());
        assert!(!a("IP changed from '127.0.0.1' to '127.0.0.2', port changed from '1' to '8080' by 'stats socket command'").looks_like_error());
    }

    #[tokio::test]
    async fn rejects_framing_characters() {
        let api = RuntimeApi::new("/nonexistent.sock");
        let err = api
            .execute(&["set weight a/b 1; show stat"])
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeApiError::InvalidCommand(_)));
    }
}
