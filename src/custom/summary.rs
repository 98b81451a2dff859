//! What the rendered snippets of a custom template hold, for `/config?type=json`.
//!
//! Owns the reading of rendered snippets back into a summary: the backends (and `listen`
//! sections) they define with their `server` lines, and the path routes of their `acl` lines.
//! Pure: no IO. Must not change the snippets or decide anything; it only reports.

use crate::render::CustomSnippets;

/// Path fetches an `acl` line may match on, as Docker Flow: Proxy's `pathType` names them.
const PATH_FETCHES: &[&str] = &[
    "path_beg", "path", "path_end", "path_dir", "path_sub", "path_reg",
];

/// One backend (or `listen` section) of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSummary {
    pub name: String,
    /// Its `server` lines.
    pub servers: usize,
}

/// One path an `acl` line of the template matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSummary {
    pub path: String,
    pub path_type: String,
}

/// The backends and routes of a service's rendered snippets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    pub backends: Vec<BackendSummary>,
    pub routes: Vec<RouteSummary>,
}

/// Reads `snippets` back: sections `backend NAME` / `listen NAME` with their `server` lines,
/// and every `acl NAME <path fetch> [-flags] VALUE...` line (in the frontend lines or in a
/// frontend of the sections) as one route per value.
pub fn summarize(snippets: &CustomSnippets) -> Summary {
    let mut out = Summary::default();
    let mut current: Option<usize> = None;
    for line in snippets.frontend.lines().chain(snippets.sections.lines()) {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else {
            continue;
        };
        let header = !line.starts_with([' ', '\t']);
        if header {
            current = None;
            if (first == "backend" || first == "listen")
                && let Some(name) = words.next()
            {
                out.backends.push(BackendSummary {
                    name: name.to_owned(),
                    servers: 0,
                });
                current = Some(out.backends.len() - 1);
            }
            continue;
        }
        match first {
            "server" => {
                if let Some(b) = current.and_then(|i| out.backends.get_mut(i)) {
                    b.servers += 1;
                }
            }
            "acl" => {
                let _name = words.next();
                let Some(fetch) = words.next() else {
                    continue;
                };
                if !PATH_FETCHES.contains(&fetch) {
                    continue;
                }
                out.routes.extend(
                    words
                        .take_while(|w| !w.starts_with('#'))
                        .filter(|w| !w.starts_with('-'))
                        .map(|w| RouteSummary {
                            path: w.to_owned(),
                            path_type: fetch.to_owned(),
                        }),
                );
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_servers_and_path_routes_are_read_back() {
        let snippets = CustomSnippets {
            frontend: "\tacl url_go-demo path_beg /demo /api\n\tacl host hdr(host) a.com\n\tuse_backend go-demo-be if url_go-demo".into(),
            sections: "backend go-demo-be\n\t\n\tserver n_0 10.0.0.1:80 check\n\tserver n_1 10.0.0.2:80 check\n\nfrontend tcp\n    bind *:9000\n    acl x path -i /x # comment\n\nlisten stats\n    bind :9001\n\nbackend empty\n".into(),
        };
        let s = summarize(&snippets);
        let backends: Vec<(&str, usize)> = s
            .backends
            .iter()
            .map(|b| (b.name.as_str(), b.servers))
            .collect();
        assert_eq!(backends, [("go-demo-be", 2), ("stats", 0), ("empty", 0)]);
        let routes: Vec<(&str, &str)> = s
            .routes
            .iter()
            .map(|r| (r.path.as_str(), r.path_type.as_str()))
            .collect();
        assert_eq!(
            routes,
            [("/demo", "path_beg"), ("/api", "path_beg"), ("/x", "path")]
        );
    }
}
