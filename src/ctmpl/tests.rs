//! Table-driven tests of the language against Go text/template's documented behaviour.

use super::*;

/// A small in-memory snapshot: service `web` with two instances, a few KV pairs.
struct Fake;

impl DataSource for Fake {
    fn service(&self, name: &str, _tag: Option<&str>) -> Result<Vec<ServiceEntry>, DataError> {
        if name != "web" {
            return Ok(vec![]);
        }
        let meta = [("version".to_string(), "1.2".to_string())].into();
        Ok(vec![
            ServiceEntry {
                node: "n2".into(),
                node_address: "10.0.0.2".into(),
                id: "web-2".into(),
                name: "web".into(),
                port: 8080,
                tags: vec!["b".into(), "a".into()],
                ..Default::default()
            },
            ServiceEntry {
                node: "n1".into(),
                node_address: "10.0.0.1".into(),
                address: "192.168.0.1".into(),
                id: "web-1".into(),
                name: "web".into(),
                port: 80,
                tags: vec!["a".into()],
                service_meta: meta,
                ..Default::default()
            },
        ])
    }
    fn services(&self) -> Result<Vec<CatalogService>, DataError> {
        Ok(vec![])
    }
    fn key(&self, path: &str) -> Result<Option<String>, DataError> {
        Ok((path == "k").then(|| "v".to_string()))
    }
    fn list(&self, _prefix: &str) -> Result<Vec<KvPair>, DataError> {
        Ok(vec![])
    }
}

fn render(src: &str) -> Result<String, String> {
    let t = Template::parse("t", src).map_err(|e| e.to_string())?;
    t.render(&Fake).map(|r| r.text).map_err(|e| e.to_string())
}

fn check(cases: &[(&str, &str)]) {
    for (src, want) in cases {
        match render(src) {
            Ok(got) => assert_eq!(&got, want, "template {src:?}"),
            Err(e) => panic!("template {src:?} failed: {e}"),
        }
    }
}

/// Each case: template, expected line, expected substring of the message.
fn check_parse_err(cases: &[(&str, usize, &str)]) {
    for (src, line, want) in cases {
        match Template::parse("t", src) {
            Ok(_) => panic!("template {src:?} parsed, expected {want:?}"),
            Err(e) => {
                assert_eq!(e.line, *line, "line of {src:?}: {e}");
                assert!(e.message.contains(want), "{src:?}: got {e}, want {want:?}");
                assert_eq!(e.template, "t");
            }
        }
    }
}

fn check_exec_err(cases: &[(&str, usize, &str)]) {
    for (src, line, want) in cases {
        let t = match Template::parse("t", src) {
            Ok(t) => t,
            Err(e) => panic!("template {src:?} did not parse: {e}"),
        };
        match t.render(&Fake) {
            Ok(r) => panic!("template {src:?} rendered {:?}, expected {want:?}", r.text),
            Err(e) => {
                assert_eq!(e.line, *line, "line of {src:?}: {e}");
                assert!(
                    e.to_string().contains(want),
                    "{src:?}: got {e}, want {want:?}"
                );
            }
        }
    }
}

#[test]
fn text_and_trim_markers() {
    check(&[
        ("hello\n", "hello\n"),
        ("a  {{- 1 -}}  b", "a1b"),
        ("a \n\t {{- 1 }} \n b", "a1 \n b"),
        ("a {{ 1 -}} \n\n b", "a 1b"),
        ("{{ 1 }} {{- 2 }}", "12"),
        ("a {{-3}} b", "a -3 b"),
        ("x {{- /* c */}} y", "x y"),
        ("x {{- /* c */ -}} \n y", "xy"),
        ("a{{/* multi\nline */}}b", "ab"),
        ("line1\n{{- if true }}\nyes\n{{- end }}\n", "line1\nyes\n"),
    ]);
}

#[test]
fn conditionals() {
    check(&[
        ("{{if true}}a{{end}}", "a"),
        ("{{if 0}}a{{else}}b{{end}}", "b"),
        (
            "{{if .}}a{{else}}nil dot is false{{end}}",
            "nil dot is false",
        ),
        (
            "{{if false}}a{{else if 0}}b{{else if \"x\"}}c{{else}}d{{end}}",
            "c",
        ),
        ("{{if false}}a{{else if 0}}b{{else}}d{{end}}", "d"),
        (
            "{{if split \",\" \"\"}}a{{else}}empty list{{end}}",
            "empty list",
        ),
        ("{{with \"\"}}x{{else}}y{{end}}", "y"),
        ("{{with \"v\"}}[{{.}}]{{end}}", "[v]"),
        ("{{with $x := \"v\"}}{{$x}}{{.}}{{end}}", "vv"),
        ("{{with 0}}x{{else with 2}}{{.}}{{end}}", "2"),
    ]);
}

#[test]
fn range_forms() {
    check(&[
        (
            "{{range $i, $e := split \",\" \"a,b,c\"}}{{$i}}={{$e}};{{end}}",
            "0=a;1=b;2=c;",
        ),
        ("{{range $e := split \",\" \"a,b\"}}{{$e}}{{end}}", "ab"),
        ("{{range split \",\" \"a,b\"}}[{{.}}]{{end}}", "[a][b]"),
        ("{{range split \",\" \"\"}}x{{else}}empty{{end}}", "empty"),
        ("{{range .}}x{{else}}none{{end}}", "none"),
        ("{{range 3}}{{.}}{{end}}", "012"),
        (
            "{{range $i, $e := split \",\" \"a,b,c,d\"}}{{if eq $i 1}}{{continue}}{{end}}{{if eq $e \"d\"}}{{break}}{{end}}{{$e}}{{end}}",
            "ac",
        ),
        // Maps iterate in sorted key order; `$k, $v` get key and value.
        (
            "{{range $k, $v := service \"web\" | byTag}}{{$k}}:{{len $v}} {{end}}",
            "a:2 b:1 ",
        ),
        // Nested ranges see their own dot and the outer variables.
        (
            "{{range $o := split \",\" \"x,y\"}}{{range split \",\" \"1,2\"}}{{$o}}{{.}} {{end}}{{end}}",
            "x1 x2 y1 y2 ",
        ),
    ]);
}

#[test]
fn variables_and_scopes() {
    check(&[
        ("{{$x := 1}}{{$x}}", "1"),
        ("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}", "2"),
        ("{{$x := 1}}{{if true}}{{$x := 2}}{{$x}}{{end}}{{$x}}", "21"),
        (
            "{{$x := 1}}{{range split \",\" \"a\"}}{{$x = .}}{{end}}{{$x}}",
            "a",
        ),
        ("{{$}}|{{.}}", "<no value>|<no value>"),
        ("{{$x := split \",\" \"a,b\"}}{{index $x 1}}", "b"),
    ]);
    check_parse_err(&[
        ("{{$x}}", 1, "undefined variable \"$x\""),
        (
            "{{if true}}{{$y := 1}}{{end}}\n{{$y}}",
            2,
            "undefined variable \"$y\"",
        ),
        ("{{$z = 1}}", 1, "undefined variable \"$z\""),
        ("{{ $x, $y := 1 }}", 1, "too many declarations"),
    ]);
}

#[test]
fn pipelines_and_parentheses() {
    check(&[
        ("{{\"a,b\" | split \",\" | join \"-\"}}", "a-b"),
        ("{{ \"x\" | printf \"%s-%s\" \"a\" }}", "a-x"),
        (
            "{{ 3 | printf \"%d-%s\" \"x\" }}",
            "%!d(string=x)-%!s(int=3)",
        ),
        ("{{ len (split \",\" \"a,b,c\") }}", "3"),
        ("{{ (index (service \"web\") 0).Node }}", "n1"),
        ("{{ not (eq 1 2) }}", "true"),
    ]);
    check_exec_err(&[(
        "{{ (split \",\" \"a\").Foo }}",
        1,
        "can't evaluate field Foo",
    )]);
}

#[test]
fn and_or_short_circuit_and_return_the_deciding_value() {
    check(&[
        ("{{and 1 0 2}}", "0"),
        ("{{and 1 2}}", "2"),
        ("{{or 0 \"\" \"x\" 1}}", "x"),
        ("[{{or 0 \"\"}}]", "[]"),
        // The failing index is never evaluated.
        ("{{or 1 (index (split \",\" \"a\") 5)}}", "1"),
        ("{{and 0 (index (split \",\" \"a\") 5)}}", "0"),
        ("{{ 0 | or \"y\" }}", "y"),
        ("[{{ \"\" | and 1 }}]", "[]"),
        ("{{not 0}} {{not \"a\"}}", "true false"),
    ]);
    check_exec_err(&[(
        "{{or 0 (index (split \",\" \"a\") 5)}}",
        1,
        "index out of range: 5",
    )]);
}

#[test]
fn comparisons() {
    check(&[
        (
            "{{eq 2 1 2 3}} {{eq \"a\" \"b\"}} {{ne 1 2}}",
            "true false true",
        ),
        (
            "{{lt 1 2}} {{le 2 2}} {{gt \"b\" \"a\"}} {{ge 1.5 2.5}}",
            "true true true false",
        ),
        ("{{eq nil nil}} {{eq \"a\" nil}}", "true false"),
        ("{{eq true true}}", "true"),
    ]);
    check_exec_err(&[
        (
            "{{eq 1 \"a\"}}",
            1,
            "error calling eq: incompatible types for comparison",
        ),
        (
            "\n{{lt true false}}",
            2,
            "error calling lt: invalid type for comparison",
        ),
        ("{{lt 1 1.5}}", 1, "incompatible types for comparison"),
        (
            "{{eq (split \",\" \"a\") (split \",\" \"a\")}}",
            1,
            "non-comparable type",
        ),
        ("{{eq 1}}", 1, "missing argument for comparison"),
        (
            "{{ne 1 2 3}}",
            1,
            "wrong number of args for ne: want 2 got 3",
        ),
    ]);
}

#[test]
fn builtins() {
    check(&[
        ("{{len \"héllo\"}}", "6"),
        ("{{index (split \",\" \"a,b\") 1}}", "b"),
        ("{{index \"abc\" 0}}", "97"),
        ("{{slice \"abcdef\" 1 3}}|{{slice \"abc\" 1}}", "bc|bc"),
        ("{{slice (split \",\" \"a,b,c\") 1}}", "[b c]"),
        ("{{print 1 2 \"a\" 3}}", "1 2a3"),
        ("{{println \"a\" 1}}", "a 1\n"),
        (
            "{{printf \"%5.1f|%-4s|%03d|%q|%v|%%\" 3.04159 \"ab\" 7 \"q\" true}}",
            "  3.0|ab  |007|\"q\"|true|%",
        ),
        ("{{split \",\" \"a,b\"}}", "[a b]"),
    ]);
    check_exec_err(&[
        (
            "{{index (split \",\" \"a\") 3}}",
            1,
            "error calling index: index out of range: 3",
        ),
        ("{{len 3}}", 1, "len of type int"),
        ("{{nil}}", 1, "nil is not a command"),
        ("{{if nil}}a{{end}}", 1, "nil is not a command"),
    ]);
}

#[test]
fn literals() {
    check(&[
        ("{{\"a\\tb\\\"\\u00e9\"}}", "a\tb\"é"),
        ("{{`x\\n`}}", "x\\n"),
        (
            "{{0x10}} {{0o17}} {{1_000}} {{-5}} {{+5}}",
            "16 15 1000 -5 5",
        ),
        (
            "{{1.5}} {{1e3}} {{1e6}} {{0.000001}}",
            "1.5 1000 1e+06 1e-06",
        ),
        ("{{true}} {{false}} {{'a'}}", "true false 97"),
    ]);
}

#[test]
fn consul_template_helpers() {
    check(&[
        ("{{ \"a,b\" | split \",\" | contains \"b\" }}", "true"),
        (
            "{{ in \"foobar\" \"oba\" }} {{ in (split \",\" \"a,b\") \"c\" }}",
            "true false",
        ),
        (
            "{{ containsAll (split \",\" \"a,b\") (split \",\" \"a,b,c\") }}",
            "true",
        ),
        (
            "{{ containsAll (split \",\" \"a,x\") (split \",\" \"a,b,c\") }}",
            "false",
        ),
        (
            "{{ containsAny (split \",\" \"x,b\") (split \",\" \"a,b\") }}",
            "true",
        ),
        (
            "{{ containsNone (split \",\" \"x,y\") (split \",\" \"a,b\") }}",
            "true",
        ),
        (
            "{{ containsNotAll (split \",\" \"a,x\") (split \",\" \"a,b\") }}",
            "true",
        ),
        (
            "{{ \"AbC\" | toLower }}{{ \"x\" | toUpper }}{{ \"a.b.c\" | replaceAll \".\" \"-\" }}[{{ \"  s \\n\" | trimSpace }}]{{ add 1 (parseInt \"41\") }}",
            "abcXa-b-c[s]42",
        ),
        (
            "{{ subtract 1 5 }} {{ 10 | divide 4 }} {{ multiply 2 1.5 }} {{ modulo 3 10 }}",
            "4 2 3 1",
        ),
        ("{{ \"a\\nb\" | indent 2 }}", "  a\n  b"),
        (
            "{{ \"x-y\" | trimPrefix \"x-\" }}{{ \"hello world\" | toTitle }}",
            "yHello World",
        ),
        (
            "{{ parseBool \"true\" }} {{ parseFloat \"1.5\" }}",
            "true 1.5",
        ),
    ]);
    check_exec_err(&[("{{ parseInt \"x\" }}", 1, "error calling parseInt")]);
}

#[test]
fn service_fields_and_maps() {
    check(&[
        (
            "{{range service \"web|any\"}}{{.Node}} {{.Address}}:{{.Port}} {{.Status}} {{join \",\" .Tags}}\n{{end}}",
            "n1 192.168.0.1:80 passing a\nn2 10.0.0.2:8080 passing a,b\n",
        ),
        (
            "{{with index (service \"web\") 0}}{{.ServiceMeta.version}}|{{.ServiceMeta.missing}}|{{index .ServiceMeta \"version\"}}|{{.Weights.Passing}}{{end}}",
            "1.2||1.2|0",
        ),
        (
            "{{ key \"k\" }} {{ keyOrDefault \"nope\" \"d\" }} {{ keyExists \"k\" }}",
            "v d true",
        ),
    ]);
    check_exec_err(&[
        (
            "a\n{{range service \"web\"}}{{.Bogus}}{{end}}",
            2,
            "can't evaluate field Bogus in type *dependency.HealthService",
        ),
        (
            "{{ service \"web@dc1\" }}",
            1,
            "datacenters are not supported",
        ),
    ]);
}

#[test]
fn parse_errors_name_the_line() {
    check_parse_err(&[
        ("a\n{{if true}}\nb", 2, "unclosed {{if}}: missing {{end}}"),
        ("a\nb\n{{end}}", 3, "unexpected {{end}}"),
        ("{{else}}", 1, "unexpected {{else}}"),
        ("x\n{{ foo }}", 2, "function \"foo\" not defined"),
        ("{{env \"HOME\"}}", 1, "function \"env\" is not supported"),
        ("{{ timestamp }}", 1, "may not read the clock"),
        ("{{define \"x\"}}{{end}}", 1, "{{define}} is not supported"),
        ("{{template \"x\"}}", 1, "{{template}} is not supported"),
        ("{{break}}", 1, "{{break}} outside {{range}}"),
        ("\n\n{{ .A", 3, "unclosed action"),
        (
            "{{ 1 | 2 }}",
            1,
            "non executable command in pipeline stage 2",
        ),
        ("{{ }}", 1, "missing value for command"),
        ("{{if}}{{end}}", 1, "missing value for if"),
        (
            "{{range 1}}{{else}}\n{{else}}{{end}}",
            2,
            "expected {{end}}; found {{else}}",
        ),
        ("{{ \"x\".Foo }}", 1, "unexpected . after term"),
        ("{{ (1 }}", 1, "unclosed left paren"),
        ("{{ 1) }}", 1, "unexpected right paren"),
        ("{{ \"a\"\"b\" }}", 1, "unexpected \"b\" in operand"),
        ("{{ .A | }}", 1, "missing command after \"|\""),
        ("{{ 1 }}\n{{/* open", 2, "unclosed comment"),
        ("{{ 1x }}", 1, "bad number syntax"),
        (
            "{{ \"x\" | 1 }}",
            1,
            "non executable command in pipeline stage 2",
        ),
        ("{{ \"\\q\" }}", 1, "unknown escape sequence"),
        ("{{end x}}", 1, "unexpected \"x\" in end"),
    ]);
}

#[test]
fn nesting_and_size_limits() {
    let deep = "{{if 1}}".repeat(parser::MAX_DEPTH + 1) + &"{{end}}".repeat(parser::MAX_DEPTH + 1);
    check_parse_err(&[(deep.as_str(), 1, "nesting deeper than")]);
    let ok = "{{range 1}}{{with 1}}".repeat(parser::MAX_DEPTH / 2 - 3)
        + "{{ (((((1))))) }}"
        + &"{{end}}{{end}}".repeat(parser::MAX_DEPTH / 2 - 3);
    check(&[(ok.as_str(), "1")]);
    // Doubling a string in a loop stops at the size limit.
    let t = Template::parse(
        "t",
        "{{$s := \"xx\"}}{{range 100}}{{$s = print $s $s}}{{end}}{{len $s}}",
    )
    .unwrap();
    let e = t.render(&Fake).unwrap_err();
    assert!(matches!(e.kind, RenderErrorKind::Limit(_)), "{e}");
    let parens = "{{ ".to_string()
        + &"(".repeat(parser::MAX_DEPTH + 1)
        + "1"
        + &")".repeat(parser::MAX_DEPTH + 1)
        + " }}";
    check_parse_err(&[(parens.as_str(), 1, "nesting deeper than")]);
    // A loop whose output would be enormous stops at the step limit instead of running on.
    let t = Template::parse(
        "t",
        "{{range 1000000000}}{{range 1000000000}}x{{end}}{{end}}",
    )
    .unwrap();
    let e = t.render(&Fake).unwrap_err();
    assert!(matches!(e.kind, RenderErrorKind::Limit(_)), "{e}");
}

#[test]
fn template_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Template>();
    assert_send_sync::<Rendered>();
    assert_send_sync::<RenderError>();
}

#[test]
fn custom_delimiters() {
    let t = Template::parse_with_delimiters("t", "<% .X %>{{x}} <%- 1 -%>\n!", "<%", "%>").unwrap();
    assert_eq!(t.render(&Fake).unwrap().text, "<no value>{{x}}1!");
    let e = Template::parse_with_delimiters("t", "a\n<% if 1 %>", "<%", "%>").unwrap_err();
    assert_eq!(e.line, 2);
}

/// Truncated and scrambled templates must produce errors, never panics.
#[test]
fn malformed_input_never_panics() {
    let readme = "backend go-demo-be\n\t{{ range $i, $e := service \"go-demo\" \"any\" }}\n\tserver {{$e.Node}}_{{$i}}_{{$e.Port}} {{$e.Address}}:{{$e.Port}} check\n\t{{- end -}}\n{{/* c */}}{{ printf \"%5.2f\" 1.5 | len }}{{ if and 1 (or 0 `x`) }}y{{ else if 'a' }}{{ end }}";
    for (i, _) in readme.char_indices() {
        if let Ok(t) = Template::parse("t", &readme[..i]) {
            let _ = t.render(&Fake);
        }
    }
    let atoms = [
        "{{", "}}", "{{- ", " -}}", "$x", "$", ".", ".A", "|", "(", ")", "\"s\"", "`r`", "'c'",
        "1", "-1", "1.5", ":=", "=", ",", "/*", "*/", "\n", " ", "if", "else", "end", "range",
        "with", "break", "nil", "true", "len", "index", "printf", "service", "key", "eq", "and",
        "\\", "é", "-", "0x",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..3000 {
        let mut src = String::new();
        for _ in 0..12 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            src.push_str(atoms[(seed % atoms.len() as u64) as usize]);
        }
        if let Ok(t) = Template::parse("t", &src) {
            let _ = t.render(&Fake);
        }
    }
}
