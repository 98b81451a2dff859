//! Whether two configuration texts differ only in the contents of server slot lines.
//!
//! Owns: the grammar of a slot line as `render` writes it (`server NAME ADDR:PORT [check]
//! [disabled] [weight N]`) and the line-by-line comparison. A text that differs from a
//! validated one only in such lines, each keeping its slot name and its `check` flag, is valid
//! too: every token of a slot line is an address, a port, a weight in HAProxy's range or a fixed
//! keyword. This lets runtime updates install the matching configuration without `haproxy -c`.
//!
//! Must not: accept anything else. Any other differing line (including a server line with
//! other keywords, as a custom template may write) means "validate".

use std::net::SocketAddr;

/// HAProxy's largest server weight.
const MAX_WEIGHT: u32 = 256;

#[derive(Debug, PartialEq, Eq)]
struct SlotLine<'a> {
    indent: &'a str,
    name: &'a str,
    check: bool,
}

fn parse(line: &str) -> Option<SlotLine<'_>> {
    let body = line.trim_start_matches(' ');
    let indent = &line[..line.len() - body.len()];
    let mut tokens = body.split(' ');
    if tokens.next()? != "server" {
        return None;
    }
    let name = tokens.next()?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return None;
    }
    tokens.next()?.parse::<SocketAddr>().ok()?;
    let mut rest = tokens.peekable();
    let check = rest.next_if_eq(&"check").is_some();
    rest.next_if_eq(&"disabled");
    if rest.next_if_eq(&"weight").is_some() {
        let weight: u32 = rest.next()?.parse().ok()?;
        if weight > MAX_WEIGHT {
            return None;
        }
    }
    rest.next().is_none().then_some(SlotLine {
        indent,
        name,
        check,
    })
}

/// True when `new` has the same lines as `validated` except for slot lines whose address,
/// port, `disabled` flag or weight changed.
pub fn only_slot_lines_differ(validated: &str, new: &str) -> bool {
    let mut old_lines = validated.split('\n');
    let mut new_lines = new.split('\n');
    loop {
        match (old_lines.next(), new_lines.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => match (parse(a), parse(b)) {
                (Some(x), Some(y)) if x == y => {}
                _ => return false,
            },
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "global\n    daemon\n\nbackend a-be\n    server s1 10.0.0.1:80 check weight 1\n    server s2 127.0.0.1:1 check disabled\n";

    #[test]
    fn slot_contents_may_change() {
        let new = BASE
            .replace(
                "10.0.0.1:80 check weight 1",
                "10.0.0.9:8080 check disabled weight 7",
            )
            .replace("127.0.0.1:1 check disabled", "[::1]:90 check weight 256");
        assert!(only_slot_lines_differ(BASE, &new));
        assert!(only_slot_lines_differ(BASE, BASE));
    }

    #[test]
    fn anything_else_needs_validation() {
        let cases = [
            BASE.replace("server s1", "server s3"),
            BASE.replace("10.0.0.1:80 check", "10.0.0.1:80"),
            BASE.replace("weight 1", "weight 257"),
            BASE.replace("weight 1", "weight 1 ssl"),
            BASE.replace("10.0.0.1:80", "host.example:80"),
            BASE.replace("daemon", "nbthread 2"),
            format!("{BASE}    server s3 10.0.0.3:80 check weight 1\n"),
            BASE.replace("    server s2 127.0.0.1:1 check disabled\n", ""),
            BASE.replace("    server s1", "server s1"),
        ];
        for new in cases {
            assert!(!only_slot_lines_differ(BASE, &new), "{new}");
        }
    }
}
