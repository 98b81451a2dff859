//! The function table: Go's built-in template functions (`eq`, `len`, `index`, `printf`...) and
//! consul-template's pure helpers (`join`, `split`, `contains`, `replaceAll`, math...). The
//! Consul data functions live in [`super::consul_funcs`]. Functions that would need the process
//! environment, the clock, files or subprocesses are rejected at parse time. Pure; no IO.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::consul_funcs;
use super::data::{DataSource, Dependencies};
use super::error::RenderErrorKind;
use super::printf;
use super::value::Value;

/// What functions can reach while rendering: the data source and the dependency record.
pub(crate) struct Ctx<'a> {
    pub source: &'a dyn DataSource,
    pub deps: Dependencies,
}

pub(crate) enum FuncError {
    /// Wrong number of arguments; reported as is.
    Arity(String),
    /// Any other failure; reported as "error calling NAME: ...".
    Msg(String),
    /// A failure with its own render error kind (missing key, data source error).
    Render(RenderErrorKind),
}

pub(crate) type FResult = Result<Value, FuncError>;
pub(crate) type PlainFn = fn(&mut Ctx<'_>, Vec<Value>) -> FResult;

pub(crate) enum Func {
    /// Short-circuit `and`, evaluated by the evaluator.
    And,
    /// Short-circuit `or`, evaluated by the evaluator.
    Or,
    Plain(PlainFn),
}

/// Functions consul-template offers that this engine refuses, with the reason.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("env", "templates may not read the process environment"),
    (
        "envOrDefault",
        "templates may not read the process environment",
    ),
    (
        "timestamp",
        "templates may not read the clock (output must be reproducible)",
    ),
    ("plugin", "templates may not run programs"),
    ("file", "templates may not read files"),
    ("writeToFile", "templates may not write files"),
    (
        "executeTemplate",
        "{{define}} and {{template}} are not supported",
    ),
    ("secret", "Vault is not supported"),
    ("secrets", "Vault is not supported"),
    ("pkiCert", "Vault is not supported"),
    (
        "datacenters",
        "only the local datacenter's snapshot is available",
    ),
    ("node", "node queries are not supported"),
    ("nodes", "node queries are not supported"),
    ("connect", "Connect queries are not supported"),
    ("caRoots", "Connect queries are not supported"),
    ("caLeaf", "Connect queries are not supported"),
    ("regexMatch", "regular expressions are not supported"),
    ("regexReplaceAll", "regular expressions are not supported"),
    ("parseJSON", "JSON functions are not supported"),
    ("toJSON", "JSON functions are not supported"),
    ("toJSONPretty", "JSON functions are not supported"),
    ("parseYAML", "YAML functions are not supported"),
    ("toYAML", "YAML functions are not supported"),
    ("call", "function values are not supported"),
    ("html", "HTML escaping is not supported"),
    ("js", "JavaScript escaping is not supported"),
    ("urlquery", "URL escaping is not supported"),
];

/// `None` when `name` can be called; otherwise the parse error to report.
pub(crate) fn check_name(name: &str) -> Option<String> {
    if lookup(name).is_some() {
        return None;
    }
    if let Some((_, why)) = UNSUPPORTED.iter().find(|(n, _)| *n == name) {
        return Some(format!("function {name:?} is not supported: {why}"));
    }
    Some(format!("function {name:?} not defined"))
}

pub(crate) fn lookup(name: &str) -> Option<Func> {
    let f: PlainFn = match name {
        "and" => return Some(Func::And),
        "or" => return Some(Func::Or),
        "not" => f_not,
        "len" => f_len,
        "index" => f_index,
        "slice" => f_slice,
        "print" => |_, a| Ok(Value::str(printf::sprint(&a))),
        "println" => |_, a| Ok(Value::str(printf::sprintln(&a))),
        "printf" => f_printf,
        "eq" => f_eq,
        "ne" => f_ne,
        "lt" => |_, a| cmp_fn("lt", a, |o| o == Ordering::Less),
        "le" => |_, a| cmp_fn("le", a, |o| o != Ordering::Greater),
        "gt" => |_, a| cmp_fn("gt", a, |o| o == Ordering::Greater),
        "ge" => |_, a| cmp_fn("ge", a, |o| o != Ordering::Less),
        "join" => f_join,
        "split" => f_split,
        "contains" => f_contains,
        "in" => f_in,
        "containsAll" => |_, a| contains_some("containsAll", a, true, true),
        "containsAny" => |_, a| contains_some("containsAny", a, false, false),
        "containsNone" => |_, a| contains_some("containsNone", a, true, false),
        "containsNotAll" => |_, a| contains_some("containsNotAll", a, false, true),
        "toLower" => |_, a| str1("toLower", a, |s| s.to_lowercase()),
        "toUpper" => |_, a| str1("toUpper", a, |s| s.to_uppercase()),
        "toTitle" => |_, a| str1("toTitle", a, to_title),
        "trimSpace" => |_, a| str1("trimSpace", a, |s| s.trim().to_string()),
        "trim" => |_, a| {
            str2("trim", a, |cut, s| {
                s.trim_matches(|c| cut.contains(c)).to_string()
            })
        },
        "trimPrefix" => |_, a| {
            str2("trimPrefix", a, |p, s| {
                s.strip_prefix(p).unwrap_or(s).to_string()
            })
        },
        "trimSuffix" => |_, a| {
            str2("trimSuffix", a, |p, s| {
                s.strip_suffix(p).unwrap_or(s).to_string()
            })
        },
        "replaceAll" => f_replace_all,
        "indent" => f_indent,
        "parseInt" => f_parse_int,
        "parseUint" => f_parse_int,
        "parseFloat" => f_parse_float,
        "parseBool" => f_parse_bool,
        "add" => |_, a| math("add", a),
        "subtract" => |_, a| math("subtract", a),
        "multiply" => |_, a| math("multiply", a),
        "divide" => |_, a| math("divide", a),
        "modulo" => |_, a| math("modulo", a),
        "minimum" => |_, a| math("minimum", a),
        "maximum" => |_, a| math("maximum", a),
        other => return consul_funcs::lookup(other).map(Func::Plain),
    };
    Some(Func::Plain(f))
}

// ---- argument helpers -------------------------------------------------------------------

pub(crate) fn arity(name: &str, args: &[Value], want: usize) -> Result<(), FuncError> {
    if args.len() == want {
        Ok(())
    } else {
        Err(FuncError::Arity(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        )))
    }
}

pub(crate) fn msg(m: impl Into<String>) -> FuncError {
    FuncError::Msg(m.into())
}

pub(crate) fn as_str(v: &Value) -> Result<&str, FuncError> {
    match v {
        Value::Str(s) => Ok(s),
        Value::Nil => Err(msg("invalid value; expected string")),
        other => Err(msg(format!(
            "wrong type for value; expected string; got {}",
            other.type_name()
        ))),
    }
}

fn as_int(v: &Value) -> Result<i64, FuncError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(msg(format!(
            "wrong type for value; expected int; got {}",
            other.type_name()
        ))),
    }
}

fn str1(name: &str, a: Vec<Value>, f: impl Fn(&str) -> String) -> FResult {
    arity(name, &a, 1)?;
    Ok(Value::str(f(as_str(&a[0])?)))
}

fn str2(name: &str, a: Vec<Value>, f: impl Fn(&str, &str) -> String) -> FResult {
    arity(name, &a, 2)?;
    Ok(Value::str(f(as_str(&a[0])?, as_str(&a[1])?)))
}

// ---- Go built-ins -----------------------------------------------------------------------

fn f_not(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("not", &a, 1)?;
    Ok(Value::Bool(!a[0].truthy()))
}

fn f_len(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("len", &a, 1)?;
    let n = match &a[0] {
        Value::Str(s) => s.len(),
        Value::List(l) => l.len(),
        Value::Map(m) => m.entries.len(),
        Value::Nil => return Err(msg("len of nil pointer")),
        other => return Err(msg(format!("len of type {}", other.type_name()))),
    };
    Ok(Value::Int(i64::try_from(n).unwrap_or(i64::MAX)))
}

fn index_of(i: &Value, len: usize) -> Result<usize, FuncError> {
    let i = match i {
        Value::Int(i) => *i,
        Value::Nil => return Err(msg("cannot index slice/array with nil")),
        other => {
            return Err(msg(format!(
                "cannot index slice/array with type {}",
                other.type_name()
            )));
        }
    };
    match usize::try_from(i) {
        Ok(u) if u < len => Ok(u),
        _ => Err(msg(format!("index out of range: {i}"))),
    }
}

fn f_index(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    let mut it = a.into_iter();
    let Some(mut item) = it.next() else {
        return Err(FuncError::Arity(
            "wrong number of args for index: want at least 1 got 0".into(),
        ));
    };
    for idx in it {
        item = match &item {
            Value::List(l) => l[index_of(&idx, l.len())?].clone(),
            Value::Str(s) => Value::Int(i64::from(s.as_bytes()[index_of(&idx, s.len())?])),
            Value::Map(m) => {
                let key = as_str(&idx)?;
                m.entries
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| m.zero.clone())
            }
            Value::Nil => return Err(msg("index of untyped nil")),
            other => {
                return Err(msg(format!(
                    "can't index item of type {}",
                    other.type_name()
                )));
            }
        };
    }
    Ok(item)
}

fn f_slice(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    let Some((item, idx)) = a.split_first() else {
        return Err(FuncError::Arity(
            "wrong number of args for slice: want at least 1 got 0".into(),
        ));
    };
    let len = match item {
        Value::Str(s) => s.len(),
        Value::List(l) => l.len(),
        Value::Nil => return Err(msg("slice of untyped nil")),
        other => {
            return Err(msg(format!(
                "can't slice item of type {}",
                other.type_name()
            )));
        }
    };
    if idx.len() > 3 || (idx.len() == 3 && matches!(item, Value::Str(_))) {
        return Err(msg(format!("too many slice indexes: {}", idx.len())));
    }
    let mut bounds = [0usize, len, len];
    for (i, v) in idx.iter().enumerate() {
        let n = as_int(v)?;
        bounds[i] = usize::try_from(n)
            .ok()
            .filter(|u| *u <= len)
            .ok_or_else(|| msg(format!("index out of range: {n}")))?;
    }
    let (lo, hi) = (bounds[0], if idx.len() > 1 { bounds[1] } else { len });
    if lo > hi {
        return Err(msg(format!("invalid slice index: {lo} > {hi}")));
    }
    match item {
        Value::Str(s) => s
            .get(lo..hi)
            .map(Value::str)
            .ok_or_else(|| msg("slice splits a UTF-8 character")),
        Value::List(l) => Ok(Value::list(l[lo..hi].to_vec())),
        _ => Err(msg("can't slice")),
    }
}

fn f_printf(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    let Some((fmt, rest)) = a.split_first() else {
        return Err(FuncError::Arity(
            "wrong number of args for printf: want at least 1 got 0".into(),
        ));
    };
    Ok(Value::str(printf::sprintf(as_str(fmt)?, rest)))
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Kind {
    Invalid,
    Bool,
    Int,
    Float,
    Str,
    Other,
}

fn kind(v: &Value) -> Kind {
    match v {
        Value::Nil => Kind::Invalid,
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) => Kind::Int,
        Value::Float(_) => Kind::Float,
        Value::Str(_) => Kind::Str,
        _ => Kind::Other,
    }
}

/// Go's `eq arg1 arg2...`: true if arg1 equals any of the others.
fn eq_values(a: &[Value]) -> Result<bool, FuncError> {
    let Some((first, rest)) = a.split_first() else {
        return Err(msg("missing argument for comparison"));
    };
    if rest.is_empty() {
        return Err(msg("missing argument for comparison"));
    }
    let k1 = kind(first);
    for other in rest {
        let k2 = kind(other);
        let truth = if k1 != k2 {
            if k1 != Kind::Invalid && k2 != Kind::Invalid {
                return Err(msg("incompatible types for comparison"));
            }
            false
        } else {
            match (first, other) {
                (Value::Bool(x), Value::Bool(y)) => x == y,
                (Value::Int(x), Value::Int(y)) => x == y,
                (Value::Float(x), Value::Float(y)) => x == y,
                (Value::Str(x), Value::Str(y)) => x == y,
                (Value::Nil, Value::Nil) => true,
                (x, _) => {
                    return Err(msg(format!("non-comparable type {}", x.type_name())));
                }
            }
        };
        if truth {
            return Ok(true);
        }
    }
    Ok(false)
}

fn f_eq(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    eq_values(&a).map(Value::Bool)
}

fn f_ne(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("ne", &a, 2)?;
    eq_values(&a).map(|b| Value::Bool(!b))
}

fn compare(x: &Value, y: &Value) -> Result<Ordering, FuncError> {
    match (x, y) {
        (Value::Int(a), Value::Int(b)) => Ok(a.cmp(b)),
        (Value::Str(a), Value::Str(b)) => Ok(a.as_bytes().cmp(b.as_bytes())),
        (Value::Float(a), Value::Float(b)) => Ok(a.partial_cmp(b).unwrap_or(Ordering::Greater)),
        _ if matches!(kind(x), Kind::Invalid | Kind::Bool | Kind::Other)
            || matches!(kind(y), Kind::Invalid | Kind::Bool | Kind::Other) =>
        {
            Err(msg("invalid type for comparison"))
        }
        _ => Err(msg("incompatible types for comparison")),
    }
}

fn cmp_fn(name: &str, a: Vec<Value>, pred: fn(Ordering) -> bool) -> FResult {
    arity(name, &a, 2)?;
    compare(&a[0], &a[1]).map(|o| Value::Bool(pred(o)))
}

// ---- consul-template helpers ------------------------------------------------------------

fn f_join(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("join", &a, 2)?;
    let sep = as_str(&a[0])?;
    let Value::List(items) = &a[1] else {
        return Err(msg(format!(
            "wrong type for value; expected []string; got {}",
            a[1].type_name()
        )));
    };
    let parts = items.iter().map(as_str).collect::<Result<Vec<_>, _>>()?;
    Ok(Value::str(parts.join(sep)))
}

fn f_split(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("split", &a, 2)?;
    let sep = as_str(&a[0])?;
    let s = as_str(&a[1])?.trim();
    if s.is_empty() {
        return Ok(Value::list(Vec::new()));
    }
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| Value::str(c.to_string())).collect()
    } else {
        s.split(sep).map(Value::str).collect()
    };
    Ok(Value::list(parts))
}

/// consul-template's `in(l, v)`: list membership (same basic type) or substring.
fn in_list(l: &Value, v: &Value) -> bool {
    match l {
        Value::List(items) => items.iter().any(|item| match (item, v) {
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            _ => false,
        }),
        Value::Str(s) => matches!(v, Value::Str(sub) if s.contains(&**sub)),
        _ => false,
    }
}

fn f_in(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("in", &a, 2)?;
    Ok(Value::Bool(in_list(&a[0], &a[1])))
}

fn f_contains(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("contains", &a, 2)?;
    Ok(Value::Bool(in_list(&a[1], &a[0])))
}

/// `containsAll/Any/None/NotAll v l`: quantifiers over the elements of `v` being in `l`.
fn contains_some(name: &str, a: Vec<Value>, ret_true: bool, invert: bool) -> FResult {
    arity(name, &a, 2)?;
    let Value::List(values) = &a[0] else {
        return Err(msg(format!(
            "wrong type for value; expected []interface {{}}; got {}",
            a[0].type_name()
        )));
    };
    for v in values.iter() {
        if in_list(&a[1], v) != invert {
            return Ok(Value::Bool(!ret_true));
        }
    }
    Ok(Value::Bool(ret_true))
}

fn to_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_start = true;
    for c in s.chars() {
        if at_start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_start = !(c.is_alphanumeric() || c == '\'');
    }
    out
}

fn f_replace_all(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("replaceAll", &a, 3)?;
    let (from, to, s) = (as_str(&a[0])?, as_str(&a[1])?, as_str(&a[2])?);
    if from.is_empty() {
        // strings.Replace with an empty old string inserts `to` around every character.
        let mut out = String::from(to);
        for c in s.chars() {
            out.push(c);
            out.push_str(to);
        }
        return Ok(Value::str(out));
    }
    Ok(Value::str(s.replace(from, to)))
}

fn f_indent(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("indent", &a, 2)?;
    let n = as_int(&a[0])?;
    let n = usize::try_from(n).map_err(|_| msg("indent value must be a positive integer"))?;
    if n > 1024 {
        return Err(msg("indent value is too large"));
    }
    let prefix = " ".repeat(n);
    let mut out = String::new();
    let mut at_line_start = true;
    for c in as_str(&a[1])?.chars() {
        if at_line_start && c != '\n' {
            out.push_str(&prefix);
        }
        out.push(c);
        at_line_start = c == '\n';
    }
    Ok(Value::str(out))
}

fn f_parse_int(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("parseInt", &a, 1)?;
    let s = as_str(&a[0])?;
    if s.is_empty() {
        return Ok(Value::Int(0));
    }
    s.parse::<i64>()
        .map(Value::Int)
        .map_err(|_| msg(format!("strconv.ParseInt: parsing {s:?}: invalid syntax")))
}

fn f_parse_float(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("parseFloat", &a, 1)?;
    let s = as_str(&a[0])?;
    if s.is_empty() {
        return Ok(Value::Float(0.0));
    }
    s.parse::<f64>()
        .map(Value::Float)
        .map_err(|_| msg(format!("strconv.ParseFloat: parsing {s:?}: invalid syntax")))
}

fn f_parse_bool(_: &mut Ctx<'_>, a: Vec<Value>) -> FResult {
    arity("parseBool", &a, 1)?;
    match as_str(&a[0])? {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(Value::Bool(false)),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(Value::Bool(true)),
        s => Err(msg(format!(
            "strconv.ParseBool: parsing {s:?}: invalid syntax"
        ))),
    }
}

/// consul-template's math helpers take `(b, a)` so that `{{ a | subtract b }}` reads naturally.
fn math(name: &str, a: Vec<Value>) -> FResult {
    arity(name, &a, 2)?;
    let (b, x) = (&a[0], &a[1]);
    let unknown = |v: &Value| msg(format!("{name}: unknown type for {}", v.to_go_string()));
    match (x, b) {
        (Value::Int(x), Value::Int(y)) => {
            let r = match name {
                "add" => x.checked_add(*y),
                "subtract" => x.checked_sub(*y),
                "multiply" => x.checked_mul(*y),
                "divide" => x.checked_div(*y),
                "modulo" => x.checked_rem(*y),
                "minimum" => Some(*x.min(y)),
                _ => Some(*x.max(y)),
            };
            r.map(Value::Int)
                .ok_or_else(|| msg("integer overflow or division by zero"))
        }
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            if name == "modulo" {
                return Err(unknown(if matches!(x, Value::Float(_)) { x } else { b }));
            }
            let f = |v: &Value| match v {
                Value::Int(i) => *i as f64,
                Value::Float(f) => *f,
                _ => 0.0,
            };
            let (fx, fy) = (f(x), f(b));
            Ok(match name {
                "add" => Value::Float(fx + fy),
                "subtract" => Value::Float(fx - fy),
                "multiply" => Value::Float(fx * fy),
                "divide" => Value::Float(fx / fy),
                "minimum" => {
                    if fx < fy {
                        x.clone()
                    } else {
                        b.clone()
                    }
                }
                _ => {
                    if fx > fy {
                        x.clone()
                    } else {
                        b.clone()
                    }
                }
            })
        }
        (Value::Int(_) | Value::Float(_), _) => Err(unknown(b)),
        _ => Err(unknown(x)),
    }
}

/// Builds a map value whose missing keys yield `zero`.
pub(crate) fn map_value(entries: BTreeMap<String, Value>, zero: Value) -> Value {
    Value::map(entries, zero)
}
