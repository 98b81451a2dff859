//! Architecture invariants that can be checked mechanically: the functional core (`domain`,
//! `plan`, `render`, `ctmpl`, `change_log`, `certs::pem`) does no IO and reads no clock.

use std::path::{Path, PathBuf};

const PURE_MODULES: &[&str] = &[
    "domain",
    "plan",
    "render",
    "ctmpl",
    "change_log",
    "certs/pem",
];

const FORBIDDEN: &[&str] = &[
    "tokio",
    "reqwest",
    "warp",
    "std::fs",
    "std::process",
    "std::net::TcpStream",
    "std::os::unix::net",
    "SystemTime",
    "Instant::now",
    "std::env::var",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The non-test part of a source file: `#[cfg(test)]` items (a test module up to its closing
/// brace, or a single line) are blanked out, so line numbers stay right.
fn production_code(text: &str) -> String {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            out.push(line);
            continue;
        }
        out.push("");
        let Some(item) = lines.next() else { break };
        out.push("");
        if !item.trim_end().ends_with('{') {
            continue;
        }
        let mut depth = 1i32;
        for inner in lines.by_ref() {
            out.push("");
            depth += inner.matches('{').count() as i32 - inner.matches('}').count() as i32;
            if depth <= 0 {
                break;
            }
        }
    }
    out.join("\n")
}

#[test]
fn the_functional_core_does_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for module in PURE_MODULES {
        let mut files = Vec::new();
        let dir = root.join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        }
        let single = root.join(format!("{module}.rs"));
        if single.is_file() {
            files.push(single);
        }
        assert!(!files.is_empty(), "module {module} not found");
        for file in files {
            if file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (number, line) in production_code(&text).lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for word in FORBIDDEN {
                    if code.contains(word) {
                        violations.push(format!("{}:{}: {word}", file.display(), number + 1));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "IO or clock in the functional core:\n{}",
        violations.join("\n")
    );
}
