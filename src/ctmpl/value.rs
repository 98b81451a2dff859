//! Runtime values of the template language and their Go-compatible behaviour: truthiness,
//! `%v` printing (as `fmt.Sprint` does), type names for messages, and field access.
//! Pure data; no IO.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;

/// A map value; `zero` is what a missing key yields (Go returns the element type's zero value).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MapValue {
    pub entries: BTreeMap<String, Value>,
    pub zero: Value,
}

/// A record with named fields (a Go struct pointer, e.g. a service entry).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StructValue {
    pub type_name: &'static str,
    pub fields: Vec<(&'static str, Value)>,
}

impl StructValue {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// Go's invalid value / nil interface.
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    List(Rc<Vec<Value>>),
    Map(Rc<MapValue>),
    Struct(Rc<StructValue>),
}

impl Value {
    pub fn str(s: impl Into<Rc<str>>) -> Value {
        Value::Str(s.into())
    }

    pub fn list(items: Vec<Value>) -> Value {
        Value::List(Rc::new(items))
    }

    pub fn string_list<S: AsRef<str>>(items: &[S]) -> Value {
        Value::list(items.iter().map(|s| Value::str(s.as_ref())).collect())
    }

    pub fn string_map(map: &BTreeMap<String, String>) -> Value {
        Value::Map(Rc::new(MapValue {
            entries: map
                .iter()
                .map(|(k, v)| (k.clone(), Value::str(v.as_str())))
                .collect(),
            zero: Value::str(""),
        }))
    }

    pub fn map(entries: BTreeMap<String, Value>, zero: Value) -> Value {
        Value::Map(Rc::new(MapValue { entries, zero }))
    }

    /// Go's `isTrue`: false, 0, nil and empty strings, lists and maps are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.entries.is_empty(),
            Value::Struct(_) => true,
        }
    }

    /// The Go type name used in error messages and `%!verb(type=value)` output.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(_) => "[]interface {}",
            Value::Map(_) => "map[string]interface {}",
            Value::Struct(s) => s.type_name,
        }
    }

    /// Appends the value as Go's `%v` prints it (`fmt.Sprint` of one operand).
    pub fn write_go(&self, out: &mut String) {
        match self {
            Value::Nil => out.push_str("<nil>"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => out.push_str(&format_float_g(*f)),
            Value::Str(s) => out.push_str(s),
            Value::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    item.write_go(out);
                }
                out.push(']');
            }
            Value::Map(m) => {
                out.push_str("map[");
                for (i, (k, v)) in m.entries.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    v.write_go(out);
                }
                out.push(']');
            }
            Value::Struct(s) => {
                out.push_str("&{");
                for (i, (_, v)) in s.fields.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    v.write_go(out);
                }
                out.push('}');
            }
        }
    }

    pub fn to_go_string(&self) -> String {
        let mut s = String::new();
        self.write_go(&mut s);
        s
    }
}

/// Formats a float as Go's `%v` (`strconv.FormatFloat(f, 'g', -1, 64)`) does: the shortest
/// digits that round-trip, in exponent form when the exponent is < -4 or >= 6 (so 1e6 is
/// `1e+06`), with at least two exponent digits.
pub(crate) fn format_float_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "1.2345e6" or "-5e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp.abs());
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = usize::try_from(exp).unwrap_or(0) + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        let cases: &[(f64, &str)] = &[
            (1.5, "1.5"),
            (1.0, "1"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.25, "-2.25"),
            (3.0e21, "3e+21"),
            (123.456, "123.456"),
        ];
        for (f, want) in cases {
            assert_eq!(format_float_g(*f), *want, "{f}");
        }
    }

    #[test]
    fn truthiness_follows_go() {
        assert!(!Value::Nil.truthy());
        assert!(!Value::Int(0).truthy());
        assert!(Value::Int(-1).truthy());
        assert!(!Value::str("").truthy());
        assert!(Value::str("0").truthy());
        assert!(!Value::list(vec![]).truthy());
        assert!(Value::list(vec![Value::Nil]).truthy());
        assert!(!Value::Float(0.0).truthy());
    }
}
