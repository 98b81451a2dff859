//! Turns the text of a rendered custom template into [`CustomSnippets`].
//!
//! Owns the merge rule: a `frontend` that binds one of the proxy's shared ports (80, 443,
//! `HTTP_PORT`, `HTTPS_PORT`) is merged into the shared `services` frontend: its `acl`,
//! `use_backend` and `http-request` lines are taken and everything else (its `bind` lines
//! first) is dropped, so two frontends never share a port. When that frontend also binds other
//! ports, it is kept as well, as written but with the shared ports' addresses taken out of its
//! `bind` lines, so the other ports keep serving the same rules. Other frontends (other ports),
//! and every other section, are kept as written. Pure: no IO.

use crate::render::CustomSnippets;

/// Keywords that start a section of an HAProxy configuration.
const SECTIONS: &[&str] = &[
    "frontend",
    "backend",
    "listen",
    "defaults",
    "global",
    "resolvers",
    "peers",
    "userlist",
    "cache",
    "program",
    "http-errors",
    "ring",
    "mailers",
];

/// Lines of a merged frontend that are taken into the shared one.
const TAKEN: &[&str] = &["acl", "use_backend", "http-request"];

/// The result of a merge: the snippets, and the lines of merged frontends that were dropped
/// (besides `bind`), for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Merged {
    pub snippets: CustomSnippets,
    pub dropped: Vec<String>,
}

fn first_word(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

fn is_section_header(line: &str) -> bool {
    !line.starts_with([' ', '\t']) && SECTIONS.contains(&first_word(line))
}

/// The ports one address of a `bind` line listens on (`*:80`, `[::]:8000-8010`), if any.
fn address_ports(addr: &str) -> Option<(u16, u16)> {
    let (_, port) = addr.rsplit_once(':')?;
    match port.split_once('-') {
        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
        None => {
            let p = port.parse().ok()?;
            Some((p, p))
        }
    }
}

fn covers_shared(range: (u16, u16), shared_ports: &[u16]) -> bool {
    shared_ports.iter().any(|p| range.0 <= *p && *p <= range.1)
}

/// `line` (a `bind` line) without its addresses on a shared port (a range counts as shared
/// when it covers one), or `None` when no other address is left. Indentation and the options
/// after the addresses are kept.
fn without_shared_addresses(line: &str, shared_ports: &[u16]) -> Option<String> {
    let indent = &line[..line.len() - line.trim_start().len()];
    let mut words = line.split_whitespace();
    let keyword = words.next()?;
    let addresses = words.next()?;
    let kept: Vec<&str> = addresses
        .split(',')
        .filter(|a| !address_ports(a).is_some_and(|r| covers_shared(r, shared_ports)))
        .collect();
    if kept.is_empty() {
        return None;
    }
    let rest: Vec<&str> = words.collect();
    let mut out = format!("{indent}{keyword} {}", kept.join(","));
    if !rest.is_empty() {
        out.push(' ');
        out.push_str(&rest.join(" "));
    }
    Some(out)
}

/// The ports a `bind` line listens on (`*:80`, `:443`, `[::]:80`, `0.0.0.0:80,:443`,
/// `ipv4@:8080`, `*:8000-8010`); sockets and unparsable addresses give none.
pub fn bind_ports(line: &str) -> Vec<(u16, u16)> {
    let mut words = line.split_whitespace();
    if words.next() != Some("bind") {
        return Vec::new();
    }
    let Some(addresses) = words.next() else {
        return Vec::new();
    };
    addresses.split(',').filter_map(address_ports).collect()
}

/// Splits `text` (a whole rendered template) into the lines merged into the shared frontend
/// and the sections kept as written. `shared_ports` are the ports of the shared frontend.
pub fn merge_whole(text: &str, shared_ports: &[u16]) -> Merged {
    // Sections, each with its header line index; text before the first header is kept.
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in text.lines() {
        if is_section_header(line) {
            sections.push(Vec::new());
        }
        if let Some(last) = sections.last_mut() {
            last.push(line);
        }
    }
    let mut frontend = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    let mut dropped = Vec::new();
    for section in sections {
        let shared = section.first().is_some_and(|h| first_word(h) == "frontend")
            && section.iter().any(|l| {
                bind_ports(l.trim())
                    .iter()
                    .any(|(a, b)| shared_ports.iter().any(|p| a <= p && p <= b))
            });
        if !shared {
            kept.extend(section.iter().map(|l| (*l).to_owned()));
            continue;
        }
        // The same frontend on its other ports, if it binds any.
        let own: Vec<String> = section
            .iter()
            .enumerate()
            .filter_map(|(i, line)| {
                if i > 0 && first_word(line) == "bind" {
                    without_shared_addresses(line, shared_ports)
                } else {
                    Some((*line).to_owned())
                }
            })
            .collect();
        let binds_others = own.iter().skip(1).any(|l| first_word(l) == "bind");
        if binds_others {
            kept.extend(own);
        }
        for line in section.iter().skip(1) {
            let word = first_word(line);
            if TAKEN.contains(&word) {
                frontend.push(*line);
            } else if !binds_others && !word.is_empty() && word != "bind" && !word.starts_with('#')
            {
                dropped.push(line.trim().to_owned());
            }
        }
    }
    Merged {
        snippets: CustomSnippets {
            frontend: frontend.join("\n"),
            sections: kept.join("\n"),
        },
        dropped,
    }
}

/// The ports of the shared frontend: 80 and 443 (as in Docker Flow: Proxy's examples) and the
/// proxy's own HTTP and HTTPS ports.
pub fn shared_ports(http_port: u16, https_port: Option<u16>) -> Vec<u16> {
    let mut ports = vec![80, 443, http_port];
    ports.extend(https_port);
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Docker Flow: Proxy's README, after rendering.
    const README: &str = "frontend go-demo-fe\n\tbind *:80\n\tbind *:443\n\toption http-server-close\n\tacl url_go-demo path_beg /demo\n\tuse_backend go-demo-be if url_go-demo\n\nbackend go-demo-be\n\t\n\tserver node1_0_9000 127.0.0.1:9000 check\n\t\n";

    #[test]
    fn a_frontend_on_a_shared_port_is_merged() {
        let m = merge_whole(README, &shared_ports(8081, None));
        assert_eq!(
            m.snippets.frontend,
            "\tacl url_go-demo path_beg /demo\n\tuse_backend go-demo-be if url_go-demo"
        );
        assert_eq!(
            m.snippets.sections,
            "backend go-demo-be\n\t\n\tserver node1_0_9000 127.0.0.1:9000 check\n\t"
        );
        assert_eq!(m.dropped, vec!["option http-server-close".to_owned()]);
    }

    #[test]
    fn the_proxys_own_port_counts_as_shared() {
        let text = "frontend x\n    bind 127.0.0.1:8081\n    http-request deny if { path /x }\n";
        let m = merge_whole(text, &shared_ports(8081, None));
        assert_eq!(m.snippets.frontend, "    http-request deny if { path /x }");
        assert_eq!(m.snippets.sections, "");
    }

    #[test]
    fn frontends_on_other_ports_and_other_sections_are_kept() {
        let text = "frontend tcp-fe\n    mode tcp\n    bind *:9999\n    default_backend db\n\nbackend db\n    mode tcp\n\nlisten stats\n    bind :9000\n";
        let m = merge_whole(text, &shared_ports(80, Some(443)));
        assert_eq!(m.snippets.frontend, "");
        assert_eq!(m.snippets.sections, text.trim_end());
        assert!(m.dropped.is_empty());
    }

    #[test]
    fn bind_port_forms() {
        assert_eq!(bind_ports("bind *:80"), vec![(80, 80)]);
        assert_eq!(bind_ports("bind :443 ssl crt /x.pem"), vec![(443, 443)]);
        assert_eq!(
            bind_ports("bind [::]:80,0.0.0.0:81"),
            vec![(80, 80), (81, 81)]
        );
        assert_eq!(bind_ports("bind ipv4@:8080"), vec![(8080, 8080)]);
        assert_eq!(bind_ports("bind *:8000-8010"), vec![(8000, 8010)]);
        assert!(bind_ports("bind /run/x.sock").is_empty());
        assert!(bind_ports("acl x path /").is_empty());
        // A range covering a shared port merges the frontend.
        let m = merge_whole("frontend r\n bind *:70-90\n acl a path /a\n", &[80]);
        assert_eq!(m.snippets.frontend, " acl a path /a");
    }

    #[test]
    fn other_ports_of_a_merged_frontend_keep_serving_the_same_rules() {
        let text = "frontend both\n    bind *:80\n    bind *:8081,:443 ssl crt /c.pem\n    bind *:70-90\n    option http-server-close\n    acl a path_beg /a\n    use_backend a-be if a\n\nbackend a-be\n    server s 10.0.0.1:80\n";
        let m = merge_whole(text, &shared_ports(80, Some(443)));
        // The rules join the shared frontend...
        assert_eq!(
            m.snippets.frontend,
            "    acl a path_beg /a\n    use_backend a-be if a"
        );
        // ...and the frontend stays on its other port only, everything else as written.
        assert_eq!(
            m.snippets.sections,
            "frontend both\n    bind *:8081 ssl crt /c.pem\n    option http-server-close\n    acl a path_beg /a\n    use_backend a-be if a\n\nbackend a-be\n    server s 10.0.0.1:80"
        );
        assert!(m.dropped.is_empty(), "{:?}", m.dropped);
    }

    #[test]
    fn text_before_the_first_section_is_kept() {
        let m = merge_whole("# comment\nbackend b\n    server s 10.0.0.1:80\n", &[80]);
        assert_eq!(
            m.snippets.sections,
            "# comment\nbackend b\n    server s 10.0.0.1:80"
        );
    }
}
