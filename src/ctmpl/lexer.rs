//! The lexer: template source → tokens, with Go text/template's rules for delimiters, trim
//! markers (`{{- ` and ` -}}`), comments, literals and identifiers. Trim markers are applied
//! here, to the text tokens. Pure; no IO.

/// A lexing error: message and 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// Literal text outside actions (trim markers already applied).
    Text(String),
    LeftDelim,
    RightDelim,
    /// A function name or keyword-like identifier.
    Ident(String),
    Keyword(Keyword),
    /// `.Name`: a field (without the dot).
    Field(String),
    /// `$name` (with the `$`), or `$` alone.
    Variable(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Dot,
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Comma,
    Eof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    If,
    Else,
    End,
    Range,
    With,
    Nil,
    Break,
    Continue,
    Define,
    Template,
    Block,
}

impl Keyword {
    fn from_ident(s: &str) -> Option<Keyword> {
        Some(match s {
            "if" => Keyword::If,
            "else" => Keyword::Else,
            "end" => Keyword::End,
            "range" => Keyword::Range,
            "with" => Keyword::With,
            "nil" => Keyword::Nil,
            "break" => Keyword::Break,
            "continue" => Keyword::Continue,
            "define" => Keyword::Define,
            "template" => Keyword::Template,
            "block" => Keyword::Block,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::If => "if",
            Keyword::Else => "else",
            Keyword::End => "end",
            Keyword::Range => "range",
            Keyword::With => "with",
            Keyword::Nil => "nil",
            Keyword::Break => "break",
            Keyword::Continue => "continue",
            Keyword::Define => "define",
            Keyword::Template => "template",
            Keyword::Block => "block",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
    pub column: usize,
    /// True when whitespace separates this token from the previous one inside an action.
    pub space_before: bool,
}

/// The default action delimiters.
pub(crate) const DEFAULT_LEFT: &str = "{{";
pub(crate) const DEFAULT_RIGHT: &str = "}}";

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

struct Lexer<'a> {
    src: &'a str,
    left: &'a str,
    right: &'a str,
    /// `-` followed by the right delimiter.
    trim_right: String,
    pos: usize,
    line: usize,
    line_start: usize,
    tokens: Vec<Token>,
}

/// Splits `src` into tokens, ending with [`Tok::Eof`], with the default delimiters.
#[cfg(test)]
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, LexError> {
    lex_with(src, DEFAULT_LEFT, DEFAULT_RIGHT)
}

/// Splits `src` into tokens with the given (non-empty) action delimiters.
pub(crate) fn lex_with<'a>(
    src: &'a str,
    left: &'a str,
    right: &'a str,
) -> Result<Vec<Token>, LexError> {
    let mut lx = Lexer {
        src,
        left,
        right,
        trim_right: format!("-{right}"),
        pos: 0,
        line: 1,
        line_start: 0,
        tokens: Vec::new(),
    };
    lx.run()?;
    Ok(lx.tokens)
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn column_at(&self, pos: usize) -> usize {
        self.src[self.line_start..pos].chars().count() + 1
    }

    /// Moves to `new_pos`, keeping the line count.
    fn advance_to(&mut self, new_pos: usize) {
        let chunk = &self.src[self.pos..new_pos];
        for (i, b) in chunk.bytes().enumerate() {
            if b == b'\n' {
                self.line += 1;
                self.line_start = self.pos + i + 1;
            }
        }
        self.pos = new_pos;
    }

    fn err(&self, line: usize, column: usize, message: impl Into<String>) -> LexError {
        LexError {
            line,
            column,
            message: message.into(),
        }
    }

    fn err_here(&self, message: impl Into<String>) -> LexError {
        self.err(self.line, self.column_at(self.pos), message)
    }

    fn push(&mut self, tok: Tok, line: usize, column: usize, space_before: bool) {
        self.tokens.push(Token {
            tok,
            line,
            column,
            space_before,
        });
    }

    fn run(&mut self) -> Result<(), LexError> {
        let mut trim_next_text = false;
        loop {
            let text_line = self.line;
            let text_col = self.column_at(self.pos);
            let start = self.pos;
            let text_end = match self.rest().find(self.left) {
                Some(i) => start + i,
                None => self.src.len(),
            };
            let mut text = &self.src[start..text_end];
            if trim_next_text {
                text = text.trim_start_matches(is_space);
            }
            let at_delim = text_end < self.src.len();
            let after_left = &self.src[text_end..];
            let left_trim = at_delim && has_left_trim(&after_left[self.left.len()..]);
            if left_trim {
                text = text.trim_end_matches(is_space);
            }
            self.advance_to(text_end);
            if !text.is_empty() {
                self.push(Tok::Text(text.to_string()), text_line, text_col, false);
            }
            if !at_delim {
                self.push(Tok::Eof, self.line, self.column_at(self.pos), false);
                return Ok(());
            }
            trim_next_text = self.lex_action(left_trim)?;
        }
    }

    /// Lexes one action starting at `{{`; returns whether it ended with a right trim marker.
    fn lex_action(&mut self, left_trim: bool) -> Result<bool, LexError> {
        let (line, col) = (self.line, self.column_at(self.pos));
        let mut inner = self.pos + self.left.len();
        if left_trim {
            inner += 2;
        }
        if self.src[inner..].starts_with("/*") {
            return self.lex_comment(inner, line, col);
        }
        self.push(Tok::LeftDelim, line, col, false);
        self.advance_to(inner);
        let mut paren_depth = 0usize;
        loop {
            let before_space = self.pos;
            let skip = self
                .rest()
                .find(|c: char| !is_space(c))
                .unwrap_or(self.rest().len());
            self.advance_to(self.pos + skip);
            let space_before = self.pos > before_space;
            let (tline, tcol) = (self.line, self.column_at(self.pos));
            let rest = self.rest();
            let right_trim = self.pos > before_space && rest.starts_with(&self.trim_right);
            if right_trim || rest.starts_with(self.right) {
                if paren_depth > 0 {
                    return Err(self.err(tline, tcol, "unclosed left paren"));
                }
                self.push(Tok::RightDelim, tline, tcol, space_before);
                let len = self.right.len() + usize::from(right_trim);
                self.advance_to(self.pos + len);
                return Ok(right_trim);
            }
            let Some(c) = rest.chars().next() else {
                return Err(self.err(line, col, "unclosed action"));
            };
            let tok = match c {
                '=' => {
                    self.advance_to(self.pos + 1);
                    Tok::Assign
                }
                ':' => {
                    if !rest.starts_with(":=") {
                        return Err(self.err(tline, tcol, "expected :="));
                    }
                    self.advance_to(self.pos + 2);
                    Tok::Declare
                }
                '|' => {
                    self.advance_to(self.pos + 1);
                    Tok::Pipe
                }
                ',' => {
                    self.advance_to(self.pos + 1);
                    Tok::Comma
                }
                '(' => {
                    paren_depth += 1;
                    self.advance_to(self.pos + 1);
                    Tok::LParen
                }
                ')' => {
                    if paren_depth == 0 {
                        return Err(self.err(tline, tcol, "unexpected right paren"));
                    }
                    paren_depth -= 1;
                    self.advance_to(self.pos + 1);
                    Tok::RParen
                }
                '"' => self.lex_quote(tline, tcol)?,
                '`' => self.lex_raw_quote(tline, tcol)?,
                '\'' => self.lex_char(tline, tcol)?,
                '$' => {
                    let name = self.take_alnum(1);
                    let tok = Tok::Variable(format!("${name}"));
                    self.check_terminator()?;
                    tok
                }
                '.' if !rest[1..].starts_with(|c: char| c.is_ascii_digit()) => {
                    let name = self.take_alnum(1);
                    self.check_terminator()?;
                    if name.is_empty() {
                        Tok::Dot
                    } else {
                        Tok::Field(name)
                    }
                }
                c if c == '.' || c == '+' || c == '-' || c.is_ascii_digit() => self.lex_number()?,
                c if is_alnum(c) => {
                    let word = self.take_alnum(0);
                    self.check_terminator()?;
                    match word.as_str() {
                        "true" => Tok::Bool(true),
                        "false" => Tok::Bool(false),
                        w => match Keyword::from_ident(w) {
                            Some(k) => Tok::Keyword(k),
                            None => Tok::Ident(word),
                        },
                    }
                }
                c => {
                    return Err(self.err(
                        tline,
                        tcol,
                        format!("unexpected character {c:?} in action"),
                    ));
                }
            };
            self.push(tok, tline, tcol, space_before);
        }
    }

    /// Lexes `/* ... */` up to and including the closing delimiter.
    fn lex_comment(&mut self, inner: usize, line: usize, col: usize) -> Result<bool, LexError> {
        let body = &self.src[inner + 2..];
        let Some(end) = body.find("*/") else {
            return Err(self.err(line, col, "unclosed comment"));
        };
        let after = inner + 2 + end + 2;
        let tail = &self.src[after..];
        let (trim, len) = if tail.starts_with(' ') && tail[1..].starts_with(&self.trim_right) {
            (true, 1 + self.trim_right.len())
        } else if tail.starts_with(self.right) {
            (false, self.right.len())
        } else {
            return Err(self.err(line, col, "comment ends before closing delimiter"));
        };
        self.advance_to(after + len);
        Ok(trim)
    }

    /// Takes the alphanumeric run after `skip` bytes; leaves the position after it.
    fn take_alnum(&mut self, skip: usize) -> String {
        let rest = &self.rest()[skip..];
        let n = rest.find(|c: char| !is_alnum(c)).unwrap_or(rest.len());
        let word = rest[..n].to_string();
        self.advance_to(self.pos + skip + n);
        word
    }

    /// Go's `atTerminator`: identifiers, fields and variables must be followed by a separator.
    fn check_terminator(&self) -> Result<(), LexError> {
        let rest = self.rest();
        match rest.chars().next() {
            None => Ok(()),
            Some(c) if is_space(c) || matches!(c, '.' | ',' | '|' | ':' | ')' | '(') => Ok(()),
            Some(_) if rest.starts_with(self.right) => Ok(()),
            Some(c) => Err(self.err_here(format!("bad character {c:?}"))),
        }
    }

    fn lex_quote(&mut self, line: usize, col: usize) -> Result<Tok, LexError> {
        let rest = self.rest();
        let mut out = String::new();
        let mut chars = rest.char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.advance_to(self.pos + i + 1);
                    return Ok(Tok::Str(out));
                }
                '\n' => break,
                '\\' => {
                    let Some((_, e)) = chars.next() else { break };
                    match e {
                        'a' => out.push('\u{7}'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'v' => out.push('\u{b}'),
                        '\\' => out.push('\\'),
                        '"' => out.push('"'),
                        'x' | 'u' | 'U' => {
                            let n = match e {
                                'x' => 2,
                                'u' => 4,
                                _ => 8,
                            };
                            let mut code = 0u32;
                            for _ in 0..n {
                                let d = chars.next().and_then(|(_, d)| d.to_digit(16));
                                let Some(d) = d else {
                                    return Err(self.err(line, col, "invalid escape in string"));
                                };
                                code = code * 16 + d;
                            }
                            match char::from_u32(code) {
                                Some(ch) if e != 'x' || code < 0x80 => out.push(ch),
                                _ => {
                                    return Err(self.err(
                                        line,
                                        col,
                                        "escape is not a valid UTF-8 character",
                                    ));
                                }
                            }
                        }
                        '0'..='7' => {
                            let mut code = e.to_digit(8).unwrap_or(0);
                            for _ in 0..2 {
                                let d = chars.next().and_then(|(_, d)| d.to_digit(8));
                                let Some(d) = d else {
                                    return Err(self.err(line, col, "invalid escape in string"));
                                };
                                code = code * 8 + d;
                            }
                            match char::from_u32(code) {
                                Some(ch) if code < 0x80 => out.push(ch),
                                _ => {
                                    return Err(self.err(
                                        line,
                                        col,
                                        "escape is not a valid UTF-8 character",
                                    ));
                                }
                            }
                        }
                        other => {
                            return Err(self.err(
                                line,
                                col,
                                format!("unknown escape sequence \\{other} in string"),
                            ));
                        }
                    }
                }
                c => out.push(c),
            }
        }
        Err(self.err(line, col, "unterminated quoted string"))
    }

    fn lex_raw_quote(&mut self, line: usize, col: usize) -> Result<Tok, LexError> {
        let body = &self.rest()[1..];
        let Some(end) = body.find('`') else {
            return Err(self.err(line, col, "unterminated raw quoted string"));
        };
        let s = body[..end].replace('\r', "");
        self.advance_to(self.pos + 1 + end + 1);
        Ok(Tok::Str(s))
    }

    fn lex_char(&mut self, line: usize, col: usize) -> Result<Tok, LexError> {
        let rest = &self.rest()[1..];
        let mut chars = rest.char_indices();
        let value = match chars.next() {
            Some((_, '\\')) => match chars.next() {
                Some((_, 'n')) => '\n',
                Some((_, 't')) => '\t',
                Some((_, 'r')) => '\r',
                Some((_, '\\')) => '\\',
                Some((_, '\'')) => '\'',
                Some((_, '0')) => '\0',
                _ => return Err(self.err(line, col, "unsupported escape in character constant")),
            },
            Some((_, c)) if c != '\'' && c != '\n' => c,
            _ => return Err(self.err(line, col, "malformed character constant")),
        };
        match chars.next() {
            Some((i, '\'')) => {
                self.advance_to(self.pos + 1 + i + 1);
                Ok(Tok::Int(i64::from(u32::from(value))))
            }
            _ => Err(self.err(line, col, "unterminated character constant")),
        }
    }

    fn lex_number(&mut self) -> Result<Tok, LexError> {
        let (line, col) = (self.line, self.column_at(self.pos));
        let rest = self.rest();
        let n = rest
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphanumeric()
                    || c == '_'
                    || c == '.'
                    || ((c == '+' || c == '-')
                        && (i == 0 || matches!(rest.as_bytes()[i - 1], b'e' | b'E' | b'p' | b'P'))))
            })
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let text = &rest[..n];
        let tok = parse_number(text)
            .ok_or_else(|| self.err(line, col, format!("bad number syntax: {text:?}")))?;
        self.advance_to(self.pos + n);
        self.check_terminator()?;
        Ok(tok)
    }
}

/// Go's `hasLeftTrimMarker`: `-` followed by a space character.
fn has_left_trim(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next() == Some('-') && chars.next().is_some_and(is_space)
}

/// Parses a Go number literal (decimal, `0x`, `0o`, `0b`, legacy octal, underscores, floats).
fn parse_number(text: &str) -> Option<Tok> {
    let (neg, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if body.is_empty() || body.starts_with('_') || body.ends_with('_') {
        return None;
    }
    let clean = body.replace('_', "");
    let lower = clean.to_ascii_lowercase();
    let int = if let Some(h) = lower.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|b| b.is_ascii_digit())
    {
        // Legacy octal; Go falls back to the decimal reading when that fails (`08`).
        i64::from_str_radix(&lower[1..], 8)
            .ok()
            .or_else(|| lower.parse::<i64>().ok())
    } else if lower.bytes().all(|b| b.is_ascii_digit()) {
        lower.parse::<i64>().ok()
    } else {
        None
    };
    if let Some(i) = int {
        return Some(Tok::Int(if neg { -i } else { i }));
    }
    if lower.starts_with("0x")
        || !lower
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'+' | b'-'))
    {
        return None;
    }
    let f: f64 = lower.parse().ok()?;
    Some(Tok::Float(if neg { -f } else { f }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn trim_markers_remove_adjacent_whitespace() {
        assert_eq!(
            toks("a \n\t{{- 3 -}} \n b"),
            vec![
                Tok::Text("a".into()),
                Tok::LeftDelim,
                Tok::Int(3),
                Tok::RightDelim,
                Tok::Text("b".into()),
                Tok::Eof
            ]
        );
        // Without a space, `-3` is a number and nothing is trimmed.
        assert_eq!(
            toks("a {{-3}} b"),
            vec![
                Tok::Text("a ".into()),
                Tok::LeftDelim,
                Tok::Int(-3),
                Tok::RightDelim,
                Tok::Text(" b".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn comments_vanish_and_keep_trims() {
        assert_eq!(
            toks("a {{- /* x\ny */ -}} b{{/* z */}}c"),
            vec![
                Tok::Text("a".into()),
                Tok::Text("b".into()),
                Tok::Text("c".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn literals() {
        assert_eq!(
            toks(r#"{{"a\tb\x41\u00e9" `r\n` 0x1F 1_000 017 1.5 1e3 'a' true nil}}"#),
            vec![
                Tok::LeftDelim,
                Tok::Str("a\tbAé".into()),
                Tok::Str("r\\n".into()),
                Tok::Int(31),
                Tok::Int(1000),
                Tok::Int(15),
                Tok::Float(1.5),
                Tok::Float(1000.0),
                Tok::Int(97),
                Tok::Bool(true),
                Tok::Keyword(Keyword::Nil),
                Tok::RightDelim,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn fields_and_variables() {
        assert_eq!(
            toks("{{$e.Node .A.B $ .}}"),
            vec![
                Tok::LeftDelim,
                Tok::Variable("$e".into()),
                Tok::Field("Node".into()),
                Tok::Field("A".into()),
                Tok::Field("B".into()),
                Tok::Variable("$".into()),
                Tok::Dot,
                Tok::RightDelim,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn custom_delimiters() {
        let toks: Vec<Tok> = lex_with("a [[- .X -]] {{b}} [[/* c */]]", "[[", "]]")
            .unwrap()
            .into_iter()
            .map(|t| t.tok)
            .collect();
        assert_eq!(
            toks,
            vec![
                Tok::Text("a".into()),
                Tok::LeftDelim,
                Tok::Field("X".into()),
                Tok::RightDelim,
                Tok::Text("{{b}} ".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = lex("a\nb {{ .X \n").unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (2, "unclosed action"));
        let e = lex("\n\n{{ \"abc }}").unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (3, "unterminated quoted string")
        );
        let e = lex("{{/* x */ }}").unwrap_err();
        assert_eq!(e.message, "comment ends before closing delimiter");
        let e = lex("{{ a#b }}").unwrap_err();
        assert_eq!(e.message, "bad character '#'");
    }
}
