//! The evaluator: walks a parsed template against a [`DataSource`] with Go text/template's
//! execution rules (variable scoping, dot, pipelines, truthiness, field access, printing).
//! Enforces the output-size and step limits. Pure: all data comes from the data source.

use super::ast::{Arg, Command, Control, Node, Pipeline, Pos};
use super::data::{DataSource, Dependencies};
use super::error::RenderErrorKind;
use super::funcs::{self, Ctx, Func, FuncError};
use super::value::Value;

/// Maximum size of a rendered template, in bytes.
pub(crate) const MAX_OUTPUT: usize = 32 * 1024 * 1024;
/// Maximum number of evaluation steps (nodes walked and commands run) per render.
pub(crate) const MAX_STEPS: u64 = 5_000_000;

/// A failure during execution, at a position.
pub(crate) struct ExecError {
    pub pos: Pos,
    pub kind: RenderErrorKind,
}

type EResult<T> = Result<T, ExecError>;

enum Flow {
    Normal,
    Break,
    Continue,
}

pub(crate) struct State<'a> {
    vars: Vec<(String, Value)>,
    out: String,
    steps: u64,
    pub ctx: Ctx<'a>,
}

fn exec_err(pos: Pos, msg: impl Into<String>) -> ExecError {
    ExecError {
        pos,
        kind: RenderErrorKind::Exec(msg.into()),
    }
}

/// Renders `nodes`; on failure returns the error and what had been read so far.
pub(crate) fn execute(
    nodes: &[Node],
    source: &dyn DataSource,
) -> Result<(String, Dependencies), Box<(ExecError, Dependencies)>> {
    let mut st = State {
        vars: vec![("$".to_string(), Value::Nil)],
        out: String::new(),
        steps: 0,
        ctx: Ctx {
            source,
            deps: Dependencies::default(),
        },
    };
    match st.walk_list(&Value::Nil, nodes) {
        Ok(_) => Ok((st.out, st.ctx.deps)),
        Err(e) => Err(Box::new((e, st.ctx.deps))),
    }
}

impl State<'_> {
    fn step(&mut self, pos: Pos) -> EResult<()> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(ExecError {
                pos,
                kind: RenderErrorKind::Limit(format!("more than {MAX_STEPS} evaluation steps")),
            });
        }
        Ok(())
    }

    fn emit(&mut self, pos: Pos, s: &str) -> EResult<()> {
        if self.out.len() + s.len() > MAX_OUTPUT {
            return Err(ExecError {
                pos,
                kind: RenderErrorKind::Limit(format!("output larger than {MAX_OUTPUT} bytes")),
            });
        }
        self.out.push_str(s);
        Ok(())
    }

    fn walk_list(&mut self, dot: &Value, nodes: &[Node]) -> EResult<Flow> {
        for node in nodes {
            match self.walk(dot, node)? {
                Flow::Normal => {}
                flow => return Ok(flow),
            }
        }
        Ok(Flow::Normal)
    }

    fn walk(&mut self, dot: &Value, node: &Node) -> EResult<Flow> {
        match node {
            Node::Text(pos, s) => {
                self.emit(*pos, s)?;
                Ok(Flow::Normal)
            }
            Node::Action(pipe) => {
                self.step(pipe.pos)?;
                let v = self.eval_pipeline(dot, pipe)?;
                if pipe.decl.is_empty() {
                    let text = match v {
                        Value::Nil => "<no value>".to_string(),
                        v => v.to_go_string(),
                    };
                    self.emit(pipe.pos, &text)?;
                }
                Ok(Flow::Normal)
            }
            Node::If(c) => self.walk_if_with(dot, c, false),
            Node::With(c) => self.walk_if_with(dot, c, true),
            Node::Range(c) => self.walk_range(dot, c),
            Node::Break(_) => Ok(Flow::Break),
            Node::Continue(_) => Ok(Flow::Continue),
        }
    }

    fn walk_if_with(&mut self, dot: &Value, c: &Control, is_with: bool) -> EResult<Flow> {
        self.step(c.pos)?;
        let mark = self.vars.len();
        let v = self.eval_pipeline(dot, &c.pipe)?;
        let flow = if v.truthy() {
            if is_with {
                self.walk_list(&v, &c.list)?
            } else {
                self.walk_list(dot, &c.list)?
            }
        } else if let Some(else_list) = &c.else_list {
            self.walk_list(dot, else_list)?
        } else {
            Flow::Normal
        };
        self.vars.truncate(mark);
        Ok(flow)
    }

    fn walk_range(&mut self, dot: &Value, c: &Control) -> EResult<Flow> {
        self.step(c.pos)?;
        let outer = self.vars.len();
        let v = self.eval_pipeline(dot, &c.pipe)?;
        let mark = self.vars.len();
        let mut iterated = false;
        let mut result = Flow::Normal;
        let mut body = |st: &mut Self, index: Value, elem: Value| -> EResult<bool> {
            iterated = true;
            st.set_range_vars(&c.pipe, index, elem.clone());
            let flow = st.walk_list(&elem, &c.list)?;
            st.vars.truncate(mark);
            Ok(matches!(flow, Flow::Break))
        };
        match &v {
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    let index = Value::Int(i64::try_from(i).unwrap_or(i64::MAX));
                    if body(self, index, item.clone())? {
                        break;
                    }
                }
            }
            Value::Map(m) => {
                for (k, item) in &m.entries {
                    if body(self, Value::str(k.as_str()), item.clone())? {
                        break;
                    }
                }
            }
            Value::Int(n) => {
                if c.pipe.decl.len() > 1 {
                    return Err(exec_err(
                        c.pos,
                        format!("can't use {n} to iterate over more than one variable"),
                    ));
                }
                for i in 0..*n {
                    self.step(c.pos)?;
                    if body(self, Value::Int(i), Value::Int(i))? {
                        break;
                    }
                }
            }
            Value::Nil => {}
            other => {
                return Err(exec_err(
                    c.pos,
                    format!("range can't iterate over {}", other.to_go_string()),
                ));
            }
        }
        if !iterated && let Some(else_list) = &c.else_list {
            result = self.walk_list(dot, else_list)?;
        }
        self.vars.truncate(outer);
        Ok(result)
    }

    /// Go's range variable rules: with one variable it gets the element; with two, the index
    /// (or key) and the element.
    fn set_range_vars(&mut self, pipe: &Pipeline, index: Value, elem: Value) {
        match (pipe.decl.as_slice(), pipe.is_assign) {
            ([], _) => {}
            ([one], true) => self.set_var(one, elem),
            ([first, second, ..], true) => {
                self.set_var(first, index);
                self.set_var(second, elem);
            }
            (decl, false) => {
                let n = self.vars.len();
                if let Some(last) = self.vars.get_mut(n.wrapping_sub(1)) {
                    last.1 = elem;
                }
                if decl.len() > 1
                    && let Some(prev) = self.vars.get_mut(n.wrapping_sub(2))
                {
                    prev.1 = index;
                }
            }
        }
    }

    fn set_var(&mut self, name: &str, value: Value) {
        if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            slot.1 = value;
        }
    }

    fn var(&self, pos: Pos, name: &str) -> EResult<Value> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| exec_err(pos, format!("undefined variable: {name}")))
    }

    fn eval_pipeline(&mut self, dot: &Value, pipe: &Pipeline) -> EResult<Value> {
        let mut value: Option<Value> = None;
        for cmd in &pipe.cmds {
            self.step(cmd.pos)?;
            value = Some(self.eval_command(dot, cmd, value)?);
        }
        let value = value.unwrap_or(Value::Nil);
        for name in &pipe.decl {
            if pipe.is_assign {
                self.set_var(name, value.clone());
            } else {
                self.vars.push((name.clone(), value.clone()));
            }
        }
        Ok(value)
    }

    fn eval_command(&mut self, dot: &Value, cmd: &Command, fin: Option<Value>) -> EResult<Value> {
        let (first, rest) = match cmd.args.split_first() {
            Some(x) => x,
            None => return Err(exec_err(cmd.pos, "empty command")),
        };
        match first {
            Arg::Function(name) => self.eval_function(dot, cmd.pos, name, rest, fin),
            Arg::Field(names) => {
                self.no_args(cmd.pos, first, rest, &fin)?;
                field_chain(cmd.pos, dot.clone(), names)
            }
            Arg::Variable(name, names) => {
                self.no_args(cmd.pos, first, rest, &fin)?;
                let v = self.var(cmd.pos, name)?;
                field_chain(cmd.pos, v, names)
            }
            Arg::Nil => Err(exec_err(cmd.pos, "nil is not a command")),
            _ => {
                self.no_args(cmd.pos, first, rest, &fin)?;
                self.eval_arg(dot, cmd.pos, first)
            }
        }
    }

    fn no_args(&self, pos: Pos, first: &Arg, rest: &[Arg], fin: &Option<Value>) -> EResult<()> {
        if !rest.is_empty() || fin.is_some() {
            return Err(exec_err(
                pos,
                format!("can't give argument to non-function {}", arg_text(first)),
            ));
        }
        Ok(())
    }

    fn eval_arg(&mut self, dot: &Value, pos: Pos, arg: &Arg) -> EResult<Value> {
        Ok(match arg {
            Arg::Dot => dot.clone(),
            Arg::Nil => Value::Nil,
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Int(i) => Value::Int(*i),
            Arg::Float(f) => Value::Float(*f),
            Arg::Str(s) => Value::str(s.as_str()),
            Arg::Field(names) => field_chain(pos, dot.clone(), names)?,
            Arg::Variable(name, names) => {
                let v = self.var(pos, name)?;
                field_chain(pos, v, names)?
            }
            Arg::Function(name) => self.eval_function(dot, pos, name, &[], None)?,
            Arg::Chain(inner, names) => {
                let v = self.eval_arg(dot, pos, inner)?;
                field_chain(pos, v, names)?
            }
            Arg::Pipe(p) => self.eval_pipeline(dot, p)?,
        })
    }

    fn eval_function(
        &mut self,
        dot: &Value,
        pos: Pos,
        name: &str,
        args: &[Arg],
        fin: Option<Value>,
    ) -> EResult<Value> {
        let Some(func) = funcs::lookup(name) else {
            return Err(exec_err(pos, format!("function {name:?} not defined")));
        };
        match func {
            Func::And | Func::Or => {
                let want = matches!(func, Func::Or);
                if args.is_empty() && fin.is_none() {
                    return Err(exec_err(
                        pos,
                        format!("wrong number of args for {name}: want at least 1 got 0"),
                    ));
                }
                let mut last = Value::Nil;
                for arg in args {
                    last = self.eval_arg(dot, pos, arg)?;
                    if last.truthy() == want {
                        return Ok(last);
                    }
                }
                Ok(fin.unwrap_or(last))
            }
            Func::Plain(f) => {
                let mut values = Vec::with_capacity(args.len() + 1);
                for arg in args {
                    values.push(self.eval_arg(dot, pos, arg)?);
                }
                values.extend(fin);
                let result = f(&mut self.ctx, values).map_err(|e| ExecError {
                    pos,
                    kind: match e {
                        FuncError::Arity(m) => RenderErrorKind::Exec(m),
                        FuncError::Msg(m) => {
                            RenderErrorKind::Exec(format!("error calling {name}: {m}"))
                        }
                        FuncError::Render(kind) => kind,
                    },
                })?;
                // Strings built by functions count against the output limit, so that a loop
                // doubling a variable cannot exhaust memory.
                if let Value::Str(s) = &result
                    && s.len() > MAX_OUTPUT
                {
                    return Err(ExecError {
                        pos,
                        kind: RenderErrorKind::Limit(format!(
                            "{name} produced a string larger than {MAX_OUTPUT} bytes"
                        )),
                    });
                }
                Ok(result)
            }
        }
    }
}

fn arg_text(arg: &Arg) -> String {
    match arg {
        Arg::Dot => ".".into(),
        Arg::Nil => "nil".into(),
        Arg::Bool(b) => b.to_string(),
        Arg::Int(i) => i.to_string(),
        Arg::Float(f) => f.to_string(),
        Arg::Str(s) => format!("{s:?}"),
        Arg::Field(names) => names.iter().map(|n| format!(".{n}")).collect(),
        Arg::Variable(v, names) => {
            let mut s = v.clone();
            for n in names {
                s.push('.');
                s.push_str(n);
            }
            s
        }
        Arg::Function(f) => f.clone(),
        Arg::Chain(inner, names) => {
            let mut s = arg_text(inner);
            for n in names {
                s.push('.');
                s.push_str(n);
            }
            s
        }
        Arg::Pipe(_) => "(...)".into(),
    }
}

/// Resolves `.A.B...` on `value` with Go's rules: struct fields must exist, missing map keys
/// give the map's zero value, fields of nil are nil.
fn field_chain(pos: Pos, mut value: Value, names: &[String]) -> EResult<Value> {
    for name in names {
        value = match &value {
            Value::Nil => Value::Nil,
            Value::Map(m) => m
                .entries
                .get(name)
                .cloned()
                .unwrap_or_else(|| m.zero.clone()),
            Value::Struct(s) => match s.get(name) {
                Some(v) => v.clone(),
                None => {
                    return Err(exec_err(
                        pos,
                        format!("can't evaluate field {name} in type {}", s.type_name),
                    ));
                }
            },
            other => {
                return Err(exec_err(
                    pos,
                    format!("can't evaluate field {name} in type {}", other.type_name()),
                ));
            }
        };
    }
    Ok(value)
}
