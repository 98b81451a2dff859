//! The syntax tree a template is parsed into once, and evaluated many times. Plain data:
//! `Send + Sync`, no runtime values, no IO.

/// A 1-based source position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Text(Pos, String),
    /// `{{pipeline}}`: prints the value unless the pipeline declares variables.
    Action(Pipeline),
    If(Control),
    Range(Control),
    With(Control),
    Break(Pos),
    Continue(Pos),
}

/// The shared shape of `if`, `range` and `with`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Control {
    pub pos: Pos,
    pub pipe: Pipeline,
    pub list: Vec<Node>,
    pub else_list: Option<Vec<Node>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pipeline {
    pub pos: Pos,
    /// Declared or assigned variables (with `$`), at most two (in `range`).
    pub decl: Vec<String>,
    /// `=` rather than `:=`.
    pub is_assign: bool,
    pub cmds: Vec<Command>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Command {
    pub pos: Pos,
    pub args: Vec<Arg>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Dot,
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// `.A.B`: fields of dot.
    Field(Vec<String>),
    /// `$x.A.B`: a variable and optional fields.
    Variable(String, Vec<String>),
    /// A function name.
    Function(String),
    /// `(pipeline).A.B` or `func.A`: fields of an evaluated term.
    Chain(Box<Arg>, Vec<String>),
    /// A parenthesized pipeline.
    Pipe(Box<Pipeline>),
}
