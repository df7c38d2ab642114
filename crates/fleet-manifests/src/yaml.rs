//! A small YAML writer for rendered objects: block mappings and sequences in the layout
//! `kubectl get -o yaml` uses (a sequence under a key is not indented further), `{}` and
//! `[]` for empty collections, and strings plain only when every YAML reader takes them
//! back as the same string.
//!
//! A string that is not safe plain is written as a JSON double-quoted string, which YAML
//! reads the same way; a multi-line string that can be, as a literal block (`|`), so a
//! fleet file kept in a ConfigMap stays readable. "Safe" is decided for YAML 1.1 readers
//! too (PyYAML, older Go libraries), which take `yes`, `on`, `0755` and `1:30` for other
//! types: when in doubt, quote.
//!
//! Keys come out in the order of the `serde_json` map, which is sorted (the workspace does
//! not enable `preserve_order`): `apiVersion`, `kind`, `metadata`, `spec` sort as kubectl
//! shows them anyway.

use serde_json::{Map, Value};

/// One object as a YAML document (without the `---` separator), ending in a newline.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(&mut out, map, 0, false),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut out, items, 0, false),
        // A literal block needs indenting even at the top.
        scalar => {
            out.push_str(&inline(scalar, 2));
            out.push('\n');
        }
    }
    out
}

/// Several objects as one multi-document stream, each document after a `---` line.
pub fn to_yaml_stream(values: &[Value]) -> String {
    values
        .iter()
        .map(|value| format!("---\n{}", to_yaml(value)))
        .collect()
}

/// Entries at `indent`; with `continues_line`, the first entry goes on the current line
/// (after a sequence's `- `).
fn write_mapping(out: &mut String, map: &Map<String, Value>, indent: usize, continues_line: bool) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !continues_line {
            pad(out, indent);
        }
        out.push_str(&string(key, indent));
        out.push(':');
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                write_mapping(out, inner, indent + 2, false);
            }
            // kubectl's layout: the items stand at the key's own indentation.
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_sequence(out, items, indent, false);
            }
            scalar => {
                out.push(' ');
                out.push_str(&inline(scalar, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn write_sequence(out: &mut String, items: &[Value], indent: usize, continues_line: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !continues_line {
            pad(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => write_mapping(out, map, indent + 2, true),
            Value::Array(inner) if !inner.is_empty() => {
                write_sequence(out, inner, indent + 2, true);
            }
            scalar => {
                out.push_str(&inline(scalar, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A value that fits after `key: ` or `- `: a scalar or an empty collection. A literal
/// block's lines are indented to `indent`.
fn inline(value: &Value, indent: usize) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s, indent),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A string as a plain scalar, a literal block or a double-quoted string.
fn string(s: &str, indent: usize) -> String {
    if is_safe_plain(s) {
        s.to_owned()
    } else if let Some(block) = literal_block(s, indent) {
        block
    } else {
        fleet_spec::yaml::double_quoted(s)
    }
}

/// Words YAML 1.1 or 1.2 reads as null or a boolean, in any case.
const RESERVED: &[&str] = &[
    "null", "~", "true", "false", "yes", "no", "on", "off", "y", "n", "<<", "=",
];

/// Whether `s` can be written unquoted and every YAML reader takes it back as this string.
fn is_safe_plain(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false; // empty is null
    };
    if RESERVED.iter().any(|word| s.eq_ignore_ascii_case(word)) {
        return false;
    }
    // Numbers in every notation (`1.0`, `0755`, `0x1f`, `1_000`, `1:30`, `.5`, `-1`, `+1`,
    // `.inf`, `.nan`) and dates start with a digit or one of these: quoting them all is
    // simpler than recognising each.
    if first.is_ascii_digit() || matches!(first, '.' | '+' | '-') {
        return false;
    }
    // Indicators that open something other than a plain scalar.
    if "?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    // Surrounding spaces are not part of a plain scalar.
    if s.starts_with(' ') || s.ends_with(' ') || s.ends_with(':') {
        return false;
    }
    if s.contains(": ") || s.contains(" #") {
        return false;
    }
    // Printable, single-line, no tabs; non-ASCII letters are fine.
    s.chars().all(|c| {
        (c == ' ' || !c.is_whitespace())
            && !c.is_control()
            && !matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}')
    })
}

/// `|` (or `|-` without a final newline) with every line indented to `indent`, when the
/// text has several lines and a literal block gives it back exactly; `None` otherwise.
fn literal_block(s: &str, indent: usize) -> Option<String> {
    let body = s.strip_suffix('\n').unwrap_or(s);
    let lines: Vec<&str> = body.split('\n').collect();
    let readable = lines.len() > 1
        // Trailing blank lines would need `|+`; a leading space an indentation indicator.
        && !body.ends_with('\n')
        && !lines.iter().find(|line| !line.is_empty()).is_some_and(|line| line.starts_with(' '))
        // A line of only spaces could be read as an empty one.
        && lines.iter().all(|line| line.is_empty() || !line.trim_matches(' ').is_empty())
        && body.chars().all(|c| {
            c == '\n' || c == '\t' || !(c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}'))
        })
        && !body.contains('\r');
    if !readable {
        return None;
    }
    let mut out = String::from(if s.ends_with('\n') { "|" } else { "|-" });
    for line in lines {
        out.push('\n');
        if !line.is_empty() {
            pad(&mut out, indent);
            out.push_str(line);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_spec::yaml::{Node, Value as Yaml, parse};
    use serde_json::json;

    /// The scalar `doc` holds under `key`, and whether it was written plain.
    fn scalar(doc: &Node, key: &str) -> (String, bool) {
        match &doc.get(key).expect("the key").value {
            Yaml::Scalar { text, plain } => (text.clone(), *plain),
            other => panic!("{key}: not a scalar: {other:?}"),
        }
    }

    #[test]
    fn strings_another_type_could_read_are_quoted_and_read_back_unchanged() {
        let tricky = [
            "yes",
            "No",
            "ON",
            "off",
            "y",
            "n",
            "true",
            "False",
            "null",
            "Null",
            "~",
            "",
            "1.0",
            "0755",
            "0x1f",
            "1_000",
            "1:30",
            "1e3",
            ".5",
            ".inf",
            "-1",
            "+1",
            "-",
            "2026-12-05",
            "a: b",
            "a:",
            "#x",
            "a #b",
            " leading",
            "trailing ",
            "tab\there",
            "line\nbreak",
            "\r",
            "'single'",
            "*alias",
            "&anchor",
            "!tag",
            "%x",
            "@x",
            "`x",
            "[x]",
            "{x}",
            "?x",
            ",x",
            "|x",
            ">x",
            "<<",
            "=",
            "\u{7f}",
            "\u{85}",
            "\u{feff}x",
            "x\u{2028}y",
        ];
        for s in tricky {
            let text = to_yaml(&json!({ "k": s }));
            let doc = parse(&text).unwrap_or_else(|e| panic!("{s:?}: {text}: {e:?}"));
            let (read, plain) = scalar(&doc, "k");
            assert_eq!(read, s, "{text}");
            assert!(!plain, "{s:?} must not be plain: {text}");
        }
    }

    #[test]
    fn ordinary_strings_stay_plain() {
        for s in [
            "nginx",
            "registry.example/search:1.2",
            "app.kubernetes.io/name",
            "RuntimeDefault",
            "/etc/mcpfleet/fleet.yaml",
            "a:b",
            "a#b",
            "with space",
            "ünïcode",
            "NET_BIND_SERVICE",
            "quote\"d",
            "back\\slash",
        ] {
            let text = to_yaml(&json!({ "k": s }));
            assert_eq!(text, format!("k: {s}\n"));
            let (read, plain) = scalar(&parse(&text).unwrap(), "k");
            assert_eq!((read.as_str(), plain), (s, true));
        }
    }

    #[test]
    fn multi_line_text_is_a_literal_block_that_reads_back_exactly() {
        for s in [
            "version: 1\nname: tools\n",
            "a\n\n  indented: x\nlast",
            "a\n\tb\n",
        ] {
            let text = to_yaml(&json!({ "data": { "fleet.yaml": s } }));
            assert!(text.contains("fleet.yaml: |"), "{text}");
            let doc = parse(&text).unwrap();
            let (read, plain) = scalar(doc.get("data").unwrap(), "fleet.yaml");
            assert_eq!(read, s, "{text}");
            assert!(!plain);
        }
        // What a literal block cannot give back exactly is quoted instead.
        for s in ["a\n\n", " a\nb", "\n a\nb", "a\n  \nb", "a\r\nb"] {
            let text = to_yaml(&json!({ "k": s }));
            assert!(text.starts_with("k: \""), "{s:?}: {text}");
            assert_eq!(scalar(&parse(&text).unwrap(), "k").0, s);
        }
    }

    #[test]
    fn layout_is_kubectls_with_empty_collections_inline() {
        let value = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "labels": {}, "name": "x" },
            "spec": {
                "containers": [
                    { "args": ["a", "1"], "name": "c", "ports": [] },
                ],
                "matrix": [[1, 2], []],
                "replicas": 2,
                "stdin": true,
                "ratio": 0.5,
                "nothing": null,
            },
        });
        let expected = "\
apiVersion: v1
kind: Pod
metadata:
  labels: {}
  name: x
spec:
  containers:
  - args:
    - a
    - \"1\"
    name: c
    ports: []
  matrix:
  - - 1
    - 2
  - []
  nothing: null
  ratio: 0.5
  replicas: 2
  stdin: true
";
        assert_eq!(to_yaml(&value), expected);
        assert!(parse(expected).is_ok());
        assert_eq!(
            to_yaml_stream(&[json!({ "a": 1 }), json!({ "b": 2 })]),
            "---\na: 1\n---\nb: 2\n"
        );
    }
}
