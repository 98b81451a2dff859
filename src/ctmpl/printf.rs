//! Go's `fmt` formatting as the template functions `print`, `println` and `printf` need it:
//! operand spacing, the verbs `%v %s %d %q %x %X %o %b %c %f %e %g %t %%`, flags, width and
//! precision, and Go's `%!verb(type=value)` / `%!d(MISSING)` / `%!(EXTRA ...)` markers. Pure.

use std::fmt::Write as _;

use super::value::{Value, format_float_g};

/// `fmt.Sprint`: spaces between operands when neither side is a string.
pub(crate) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !matches!(a, Value::Str(_)) && !matches!(args[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        a.write_go(&mut out);
    }
    out
}

/// `fmt.Sprintln`: spaces between all operands and a final newline.
pub(crate) fn sprintln(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        a.write_go(&mut out);
    }
    out.push('\n');
    out
}

#[derive(Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    zero: bool,
    space: bool,
    sharp: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// `fmt.Sprintf`.
pub(crate) fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut next_arg = 0usize;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                '#' => spec.sharp = true,
                _ => break,
            }
            chars.next();
        }
        spec.width = take_num(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.prec = Some(take_num(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next_arg) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next_arg += 1;
        out.push_str(&format_one(verb, spec, arg));
    }
    if next_arg < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[next_arg..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{}={}", a.type_name(), a.to_go_string());
        }
        out.push(')');
    }
    out
}

fn take_num(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut n: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        chars.next();
        n = Some(
            n.unwrap_or(0)
                .saturating_mul(10)
                .saturating_add(d as usize)
                .min(10_000),
        );
    }
    n
}

fn bad_verb(verb: char, arg: &Value) -> String {
    match arg {
        Value::Nil => format!("%!{verb}(<nil>)"),
        a => format!("%!{verb}({}={})", a.type_name(), a.to_go_string()),
    }
}

fn format_one(verb: char, spec: Spec, arg: &Value) -> String {
    // Lists apply the verb to each element, as Go does for slices.
    if let Value::List(items) = arg
        && verb != 'v'
        && !(verb == 'x' || verb == 'X' || verb == 'q')
    {
        let parts: Vec<String> = items.iter().map(|i| format_one(verb, spec, i)).collect();
        return format!("[{}]", parts.join(" "));
    }
    let (body, numeric) = match (verb, arg) {
        ('v', Value::Int(i)) | ('d', Value::Int(i)) => (sign(spec, i.to_string()), true),
        ('v', Value::Float(f)) => (sign(spec, format_float_g(*f)), true),
        ('v', a) => (truncate(&a.to_go_string(), spec.prec), false),
        ('s', Value::Str(s)) => (truncate(s, spec.prec), false),
        ('s', a @ (Value::Map(_) | Value::Struct(_))) => (a.to_go_string(), false),
        ('q', Value::Str(s)) => (go_quote(s), false),
        ('q', Value::Int(i)) => (
            match u32::try_from(*i).ok().and_then(char::from_u32) {
                Some(c) => format!("'{c}'"),
                None => "'\u{FFFD}'".to_string(),
            },
            false,
        ),
        ('t', Value::Bool(b)) => (b.to_string(), false),
        ('c', Value::Int(i)) => (
            u32::try_from(*i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}')
                .to_string(),
            false,
        ),
        ('x', Value::Int(i)) => (sign(spec, radix(*i, 16, spec.sharp, "0x")), true),
        ('X', Value::Int(i)) => (
            sign(spec, radix(*i, 16, spec.sharp, "0X").to_uppercase()),
            true,
        ),
        ('o', Value::Int(i)) => (sign(spec, radix(*i, 8, spec.sharp, "0")), true),
        ('b', Value::Int(i)) => (sign(spec, radix(*i, 2, false, "")), true),
        ('x', Value::Str(s)) => (s.bytes().map(|b| format!("{b:02x}")).collect(), false),
        ('X', Value::Str(s)) => (s.bytes().map(|b| format!("{b:02X}")).collect(), false),
        ('f' | 'F', Value::Float(f)) => (
            sign(spec, format!("{:.*}", spec.prec.unwrap_or(6), f)),
            true,
        ),
        ('e', Value::Float(f)) => (sign(spec, go_exp(*f, spec.prec.unwrap_or(6))), true),
        ('g', Value::Float(f)) => (sign(spec, format_float_g(*f)), true),
        _ => return bad_verb(verb, arg),
    };
    pad(spec, body, numeric)
}

fn sign(spec: Spec, s: String) -> String {
    if s.starts_with('-') {
        s
    } else if spec.plus {
        format!("+{s}")
    } else if spec.space {
        format!(" {s}")
    } else {
        s
    }
}

fn radix(i: i64, base: u32, sharp: bool, prefix: &str) -> String {
    let neg = i < 0;
    let mag = i.unsigned_abs();
    let digits = match base {
        16 => format!("{mag:x}"),
        8 => format!("{mag:o}"),
        _ => format!("{mag:b}"),
    };
    let pre = if sharp { prefix } else { "" };
    format!("{}{pre}{digits}", if neg { "-" } else { "" })
}

fn go_exp(f: f64, prec: usize) -> String {
    let s = format!("{f:.prec$e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let exp: i32 = e.parse().unwrap_or(0);
            let sign = if exp < 0 { '-' } else { '+' };
            format!("{m}e{sign}{:02}", exp.abs())
        }
        None => s,
    }
}

fn truncate(s: &str, prec: Option<usize>) -> String {
    match prec {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_string(),
    }
}

fn pad(spec: Spec, body: String, numeric: bool) -> String {
    let len = body.chars().count();
    let Some(width) = spec.width.filter(|w| *w > len) else {
        return body;
    };
    let fill = width - len;
    if spec.minus {
        format!("{body}{}", " ".repeat(fill))
    } else if spec.zero && numeric {
        let (sign, digits) = match body.chars().next() {
            Some(c @ ('-' | '+' | ' ')) => (c.to_string(), body[1..].to_string()),
            _ => (String::new(), body),
        };
        format!("{sign}{}{digits}", "0".repeat(fill))
    } else if spec.zero {
        format!("{}{body}", "0".repeat(fill))
    } else {
        format!("{}{body}", " ".repeat(fill))
    }
}

/// `strconv.Quote`: a double-quoted Go string literal.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printf_matches_go() {
        let s = |x: &str| Value::str(x);
        let cases: Vec<(&str, Vec<Value>, &str)> = vec![
            ("%s-%d", vec![s("a"), Value::Int(3)], "a-3"),
            (
                "%v|%v|%v",
                vec![Value::Bool(true), Value::Float(2.5), Value::Nil],
                "true|2.5|<nil>",
            ),
            ("%q", vec![s("a\"b\n")], r#""a\"b\n""#),
            ("100%%", vec![], "100%"),
            (
                "%5d|%-5d|%05d",
                vec![Value::Int(42), Value::Int(42), Value::Int(-42)],
                "   42|42   |-0042",
            ),
            (
                "%x %X %#x %o %b",
                vec![
                    Value::Int(255),
                    Value::Int(255),
                    Value::Int(255),
                    Value::Int(8),
                    Value::Int(5),
                ],
                "ff FF 0xff 10 101",
            ),
            (
                "%.2f %f %e",
                vec![
                    Value::Float(1.23456),
                    Value::Float(1.5),
                    Value::Float(1234.5),
                ],
                "1.23 1.500000 1.234500e+03",
            ),
            ("%d", vec![s("x")], "%!d(string=x)"),
            ("%s", vec![Value::Int(1)], "%!s(int=1)"),
            ("%d %d", vec![Value::Int(1)], "1 %!d(MISSING)"),
            ("%d", vec![Value::Int(1), s("x")], "1%!(EXTRA string=x)"),
            (
                "%.2s|%6s|%-6s|",
                vec![s("abcdef"), s("ab"), s("ab")],
                "ab|    ab|ab    |",
            ),
            ("%v", vec![Value::string_list(&["a", "b"])], "[a b]"),
            ("%s", vec![Value::string_list(&["a", "b"])], "[a b]"),
            (
                "%+d % d %t %c",
                vec![
                    Value::Int(5),
                    Value::Int(5),
                    Value::Bool(false),
                    Value::Int(65),
                ],
                "+5  5 false A",
            ),
            ("50%", vec![], "50%!(NOVERB)"),
        ];
        for (fmt, args, want) in cases {
            assert_eq!(sprintf(fmt, &args), want, "format {fmt:?}");
        }
    }

    #[test]
    fn print_spacing_matches_go() {
        assert_eq!(sprint(&[Value::Int(1), Value::Int(2)]), "1 2");
        assert_eq!(
            sprint(&[Value::str("a"), Value::Int(2), Value::str("b")]),
            "a2b"
        );
        assert_eq!(
            sprint(&[Value::Int(1), Value::Bool(true), Value::str("x")]),
            "1 truex"
        );
        assert_eq!(sprintln(&[Value::str("a"), Value::str("b")]), "a b\n");
    }
}
