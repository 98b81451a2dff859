//! The parser: tokens → syntax tree, with Go text/template's grammar and its parse-time checks
//! (undefined variables and functions, misplaced `{{else}}`/`{{end}}`/`{{break}}`, unsupported
//! actions). Limits nesting depth so hostile templates cannot exhaust the stack. Pure; no IO.

use super::ast::{Arg, Command, Control, Node, Pipeline, Pos};
use super::funcs;
use super::lexer::{Keyword, Tok, Token};

/// Maximum nesting of control structures and parentheses.
pub(crate) const MAX_DEPTH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

type PResult<T> = Result<T, SyntaxError>;

enum Terminator {
    Eof,
    End,
    /// `{{else` has been consumed; the rest of the action is pending.
    Else(Pos),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    If,
    Range,
    With,
    Action,
    Paren,
}

impl Context {
    fn name(self) -> &'static str {
        match self {
            Context::If => "if",
            Context::Range => "range",
            Context::With => "with",
            Context::Action => "command",
            Context::Paren => "parenthesized pipeline",
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    vars: Vec<String>,
    range_depth: usize,
    depth: usize,
}

/// Parses the tokens of a whole template.
pub(crate) fn parse(tokens: Vec<Token>) -> PResult<Vec<Node>> {
    let mut p = Parser {
        tokens,
        pos: 0,
        vars: vec!["$".to_string()],
        range_depth: 0,
        depth: 0,
    };
    let (list, term) = p.list()?;
    match term {
        Terminator::Eof => Ok(list),
        Terminator::End => Err(p.err_prev("unexpected {{end}}")),
        Terminator::Else(pos) => Err(SyntaxError {
            pos,
            message: "unexpected {{else}}".to_string(),
        }),
    }
}

fn pos_of(t: &Token) -> Pos {
    Pos {
        line: t.line,
        column: t.column,
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Text(_) => "text".into(),
        Tok::LeftDelim => "\"{{\"".into(),
        Tok::RightDelim => "\"}}\"".into(),
        Tok::Ident(s) => format!("{s:?}"),
        Tok::Keyword(k) => format!("<{}>", k.as_str()),
        Tok::Field(s) => format!("\".{s}\""),
        Tok::Variable(s) => format!("{s:?}"),
        Tok::Str(s) => format!("{s:?}"),
        Tok::Int(i) => format!("{i}"),
        Tok::Float(f) => format!("{f}"),
        Tok::Bool(b) => format!("{b}"),
        Tok::Dot => "\".\"".into(),
        Tok::Pipe => "\"|\"".into(),
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::Declare => "\":=\"".into(),
        Tok::Assign => "\"=\"".into(),
        Tok::Comma => "\",\"".into(),
        Tok::Eof => "EOF".into(),
    }
}

impl Parser {
    fn peek(&self) -> &Token {
        // The token list always ends with Eof and the parser never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Token {
        &self.tokens[(self.pos + n).min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn err_at(&self, t: &Token, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            pos: pos_of(t),
            message: message.into(),
        }
    }

    fn err_prev(&self, message: impl Into<String>) -> SyntaxError {
        let t = &self.tokens[self.pos.saturating_sub(1)];
        self.err_at(t, message)
    }

    fn enter(&mut self, at: &Token) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err_at(at, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn expect_right_delim(&mut self, context: &str) -> PResult<()> {
        let t = self.next();
        if t.tok == Tok::RightDelim {
            Ok(())
        } else {
            Err(self.err_at(&t, format!("unexpected {} in {context}", describe(&t.tok))))
        }
    }

    /// Parses nodes until EOF, `{{end}}` or `{{else`.
    fn list(&mut self) -> PResult<(Vec<Node>, Terminator)> {
        let mut nodes = Vec::new();
        loop {
            let t = self.next();
            match t.tok {
                Tok::Eof => return Ok((nodes, Terminator::Eof)),
                Tok::Text(s) => nodes.push(Node::Text(
                    Pos {
                        line: t.line,
                        column: t.column,
                    },
                    s,
                )),
                Tok::LeftDelim => {
                    let kw = self.peek().clone();
                    match kw.tok {
                        Tok::Keyword(Keyword::End) => {
                            self.next();
                            self.expect_right_delim("end")?;
                            return Ok((nodes, Terminator::End));
                        }
                        Tok::Keyword(Keyword::Else) => {
                            self.next();
                            return Ok((nodes, Terminator::Else(pos_of(&kw))));
                        }
                        Tok::Keyword(k @ (Keyword::If | Keyword::Range | Keyword::With)) => {
                            self.next();
                            nodes.push(self.control(k, &kw)?);
                        }
                        Tok::Keyword(k @ (Keyword::Break | Keyword::Continue)) => {
                            self.next();
                            if self.range_depth == 0 {
                                return Err(self.err_at(
                                    &kw,
                                    format!("{{{{{}}}}} outside {{{{range}}}}", k.as_str()),
                                ));
                            }
                            self.expect_right_delim(k.as_str())?;
                            let pos = pos_of(&kw);
                            nodes.push(if k == Keyword::Break {
                                Node::Break(pos)
                            } else {
                                Node::Continue(pos)
                            });
                        }
                        Tok::Keyword(
                            k @ (Keyword::Define | Keyword::Template | Keyword::Block),
                        ) => {
                            return Err(self.err_at(
                                &kw,
                                format!(
                                    "{{{{{}}}}} is not supported: each template is a single file",
                                    k.as_str()
                                ),
                            ));
                        }
                        _ => {
                            let pipe = self.pipeline(Context::Action)?;
                            nodes.push(Node::Action(pipe));
                        }
                    }
                }
                ref other => {
                    return Err(self.err_at(&t, format!("unexpected {}", describe(other))));
                }
            }
        }
    }

    fn control(&mut self, kind: Keyword, kw: &Token) -> PResult<Node> {
        self.enter(kw)?;
        let mark = self.vars.len();
        let context = match kind {
            Keyword::If => Context::If,
            Keyword::Range => Context::Range,
            _ => Context::With,
        };
        let pipe = self.pipeline(context)?;
        if kind == Keyword::Range {
            self.range_depth += 1;
        }
        let (list, term) = self.list()?;
        if kind == Keyword::Range {
            self.range_depth -= 1;
        }
        let unclosed = || SyntaxError {
            pos: pos_of(kw),
            message: format!("unclosed {{{{{}}}}}: missing {{{{end}}}}", kind.as_str()),
        };
        let else_list = match term {
            Terminator::Eof => return Err(unclosed()),
            Terminator::End => None,
            Terminator::Else(else_pos) => {
                let next = self.peek().clone();
                match next.tok {
                    Tok::Keyword(k @ (Keyword::If | Keyword::With)) if k == kind => {
                        // `{{else if x}}` is `{{else}}{{if x}}...{{end}}{{end}}`; the nested
                        // control consumes the shared `{{end}}`.
                        self.next();
                        Some(vec![self.control(k, &next)?])
                    }
                    Tok::RightDelim => {
                        self.next();
                        let (else_nodes, term) = self.list()?;
                        match term {
                            Terminator::End => Some(else_nodes),
                            Terminator::Eof => return Err(unclosed()),
                            Terminator::Else(pos) => {
                                return Err(SyntaxError {
                                    pos,
                                    message: format!(
                                        "expected {{{{end}}}}; found {{{{else}}}} (the {{{{{}}}}} on line {} already has one)",
                                        kind.as_str(),
                                        kw.line
                                    ),
                                });
                            }
                        }
                    }
                    _ => {
                        return Err(SyntaxError {
                            pos: else_pos,
                            message: format!("unexpected {} in else", describe(&next.tok)),
                        });
                    }
                }
            }
        };
        self.vars.truncate(mark);
        self.depth -= 1;
        let ctl = Control {
            pos: pos_of(kw),
            pipe,
            list,
            else_list,
        };
        Ok(match kind {
            Keyword::If => Node::If(ctl),
            Keyword::Range => Node::Range(ctl),
            _ => Node::With(ctl),
        })
    }

    /// Parses a pipeline up to and including its closing `}}` (or `)` inside parentheses).
    fn pipeline(&mut self, context: Context) -> PResult<Pipeline> {
        let start = self.peek().clone();
        let mut pipe = Pipeline {
            pos: pos_of(&start),
            decl: Vec::new(),
            is_assign: false,
            cmds: Vec::new(),
        };
        self.declarations(&mut pipe, context)?;
        let end = if context == Context::Paren {
            Tok::RParen
        } else {
            Tok::RightDelim
        };
        loop {
            let t = self.peek().clone();
            if t.tok == end {
                self.next();
                break;
            }
            match t.tok {
                Tok::Eof | Tok::RightDelim | Tok::RParen => {
                    return Err(self.err_at(
                        &t,
                        format!("unexpected {} in {}", describe(&t.tok), context.name()),
                    ));
                }
                _ => {
                    let cmd = self.command(&end)?;
                    pipe.cmds.push(cmd);
                    if self.peek().tok == Tok::Pipe {
                        let bar = self.next();
                        if self.peek().tok == end {
                            return Err(self.err_at(&bar, "missing command after \"|\""));
                        }
                    }
                }
            }
        }
        if pipe.cmds.is_empty() {
            return Err(self.err_at(&start, format!("missing value for {}", context.name())));
        }
        for (i, cmd) in pipe.cmds.iter().enumerate().skip(1) {
            if matches!(
                cmd.args.first(),
                Some(
                    Arg::Bool(_) | Arg::Dot | Arg::Nil | Arg::Int(_) | Arg::Float(_) | Arg::Str(_)
                )
            ) {
                return Err(SyntaxError {
                    pos: cmd.pos,
                    message: format!("non executable command in pipeline stage {}", i + 1),
                });
            }
        }
        // Declared variables become visible only after the pipeline.
        if !pipe.is_assign {
            self.vars.extend(pipe.decl.iter().cloned());
        }
        Ok(pipe)
    }

    fn declarations(&mut self, pipe: &mut Pipeline, context: Context) -> PResult<()> {
        let first = self.peek().clone();
        let Tok::Variable(name) = &first.tok else {
            return Ok(());
        };
        let after = self.peek_at(1).clone();
        match after.tok {
            Tok::Declare | Tok::Assign => {
                pipe.is_assign = after.tok == Tok::Assign;
                if pipe.is_assign && !self.vars.contains(name) {
                    return Err(self.err_at(&first, format!("undefined variable {name:?}")));
                }
                self.pos += 2;
                pipe.decl.push(name.clone());
            }
            Tok::Comma => {
                if context != Context::Range {
                    return Err(self.err_at(
                        &after,
                        format!("too many declarations in {}", context.name()),
                    ));
                }
                let second = self.peek_at(2).clone();
                let op = self.peek_at(3).clone();
                let Tok::Variable(name2) = &second.tok else {
                    return Err(self.err_at(&second, "range can only initialize variables"));
                };
                if !matches!(op.tok, Tok::Declare | Tok::Assign) {
                    return Err(self.err_at(&op, "expected := or = after range variables"));
                }
                pipe.is_assign = op.tok == Tok::Assign;
                if pipe.is_assign {
                    for (n, t) in [(name, &first), (name2, &second)] {
                        if !self.vars.contains(n) {
                            return Err(self.err_at(t, format!("undefined variable {n:?}")));
                        }
                    }
                }
                self.pos += 4;
                pipe.decl.push(name.clone());
                pipe.decl.push(name2.clone());
            }
            _ => {}
        }
        if pipe.decl.first().is_some_and(|n| n == "$") && !pipe.is_assign {
            return Err(self.err_at(&first, "cannot declare the variable \"$\""));
        }
        Ok(())
    }

    fn command(&mut self, end: &Tok) -> PResult<Command> {
        let start = self.peek().clone();
        let mut cmd = Command {
            pos: pos_of(&start),
            args: Vec::new(),
        };
        loop {
            let t = self.peek().clone();
            if t.tok == *end || t.tok == Tok::Pipe {
                break;
            }
            if !cmd.args.is_empty() && !t.space_before {
                return Err(self.err_at(&t, format!("unexpected {} in operand", describe(&t.tok))));
            }
            let arg = self.operand()?;
            cmd.args.push(arg);
        }
        if cmd.args.is_empty() {
            return Err(self.err_at(&start, "empty command"));
        }
        Ok(cmd)
    }

    fn operand(&mut self) -> PResult<Arg> {
        let t = self.next();
        let term = match t.tok.clone() {
            Tok::Ident(name) => {
                if let Some(msg) = funcs::check_name(&name) {
                    return Err(self.err_at(&t, msg));
                }
                Arg::Function(name)
            }
            Tok::Keyword(Keyword::Nil) => Arg::Nil,
            Tok::Dot => Arg::Dot,
            Tok::Bool(b) => Arg::Bool(b),
            Tok::Int(i) => Arg::Int(i),
            Tok::Float(f) => Arg::Float(f),
            Tok::Str(s) => Arg::Str(s),
            Tok::Field(f) => Arg::Field(vec![f]),
            Tok::Variable(v) => {
                if !self.vars.contains(&v) {
                    return Err(self.err_at(&t, format!("undefined variable {v:?}")));
                }
                Arg::Variable(v, Vec::new())
            }
            Tok::LParen => {
                self.enter(&t)?;
                let pipe = self.pipeline(Context::Paren)?;
                self.depth -= 1;
                Arg::Pipe(Box::new(pipe))
            }
            other => {
                return Err(self.err_at(&t, format!("unexpected {} in operand", describe(&other))));
            }
        };
        let mut fields = Vec::new();
        while let Tok::Field(f) = &self.peek().tok {
            if self.peek().space_before {
                break;
            }
            fields.push(f.clone());
            self.next();
        }
        if fields.is_empty() {
            return Ok(term);
        }
        Ok(match term {
            Arg::Field(mut first) => {
                first.extend(fields);
                Arg::Field(first)
            }
            Arg::Variable(v, _) => Arg::Variable(v, fields),
            Arg::Bool(_) | Arg::Str(_) | Arg::Int(_) | Arg::Float(_) | Arg::Nil | Arg::Dot => {
                return Err(
                    self.err_at(&t, format!("unexpected . after term {}", describe(&t.tok)))
                );
            }
            other => Arg::Chain(Box::new(other), fields),
        })
    }
}
