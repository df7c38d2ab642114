//! A multi-document YAML stream read into `serde_json::Value`s, so the Pod Security check
//! can walk rendered manifests the same way whether they were written as YAML or JSON.
//!
//! Built on the event parser the workspace already trusts (saphyr-parser, which fleet-spec
//! reads fleet files with) rather than a serde YAML crate: serde_yaml is deprecated, its
//! forks (serde_yaml_ng, serde_norway) carry a port of libyaml, and the tree a checker needs
//! is a page of code over these events. Plain scalars resolve as YAML 1.2's core schema
//! says (null, booleans, integers, floats; anything else is a string), which is how both
//! the API server and `kubernetes-validate` read them; quoted and block scalars are strings.

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// Why a YAML stream could not be read, and where.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("YAML line {line}, column {column}: {message}")]
pub struct YamlError {
    /// 1-based line of the offending text.
    pub line: usize,
    /// 1-based column of the offending text.
    pub column: usize,
    /// What is wrong there.
    pub message: String,
}

enum Frame {
    Seq {
        anchor: usize,
        items: Vec<Value>,
    },
    Map {
        anchor: usize,
        entries: Map<String, Value>,
        key: Option<String>,
    },
}

/// Every document of a YAML stream, in order; empty documents (a bare `---`) are left out,
/// as `kubectl apply` leaves them out.
///
/// # Errors
/// A syntax error, an alias to an unknown anchor, a key that is not a scalar, a key given
/// twice in one mapping, a merge key (`<<`) or a tag outside the core schema: each with
/// its line and column.
pub fn parse_yaml_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Value> = HashMap::new();
    let mut documents = Vec::new();

    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|e| YamlError {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_owned(),
        })?;
        let at = |message: String| YamlError {
            line: span.start.line(),
            column: span.start.col() + 1,
            message,
        };
        let expecting_key = matches!(stack.last(), Some(Frame::Map { key: None, .. }));
        let is_seq = matches!(event, Event::SequenceStart(..));
        let done = match event {
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd => None,
            Event::Alias(id) => Some(
                anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| at("alias to an unknown anchor".to_owned()))?,
            ),
            Event::Scalar(text, style, anchor, tag) => {
                let value = if expecting_key {
                    // Keys stay as written: `1.10:` is the key "1.10", not a number.
                    Value::String(text.into_owned())
                } else {
                    scalar(&text, style, tag.as_deref()).map_err(at)?
                };
                if anchor > 0 {
                    anchors.insert(anchor, value.clone());
                }
                Some(value)
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                if expecting_key {
                    return Err(at(
                        "a key must be a scalar, not a list or mapping".to_owned()
                    ));
                }
                if let Some(tag) = tag.filter(|tag| !tag.is_yaml_core_schema()) {
                    return Err(at(format!("YAML tag `{tag}` is not supported")));
                }
                stack.push(if is_seq {
                    Frame::Seq {
                        anchor,
                        items: Vec::new(),
                    }
                } else {
                    Frame::Map {
                        anchor,
                        entries: Map::new(),
                        key: None,
                    }
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (anchor, value) = match stack.pop() {
                    Some(Frame::Seq { anchor, items }) => (anchor, Value::Array(items)),
                    Some(Frame::Map {
                        anchor, entries, ..
                    }) => (anchor, Value::Object(entries)),
                    None => return Err(at("unbalanced end of a collection".to_owned())),
                };
                if anchor > 0 {
                    anchors.insert(anchor, value.clone());
                }
                Some(value)
            }
        };
        let Some(value) = done else { continue };
        match stack.last_mut() {
            None if value.is_null() => {}
            None => documents.push(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    let Value::String(name) = value else {
                        return Err(at("a key must be a scalar".to_owned()));
                    };
                    if name == "<<" {
                        return Err(at("merge keys (`<<`) are not supported".to_owned()));
                    }
                    if entries.contains_key(&name) {
                        return Err(at(format!("key `{name}` is given twice in one mapping")));
                    }
                    *key = Some(name);
                }
                Some(name) => {
                    entries.insert(name, value);
                }
            },
        }
    }
    Ok(documents)
}

/// A scalar's value: quoted, block and `!!str` scalars are strings, plain ones resolve.
fn scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if let Some(tag) = tag {
        if !tag.is_yaml_core_schema() {
            return Err(format!("YAML tag `{tag}` is not supported"));
        }
        if tag.suffix == "str" {
            return Ok(Value::String(text.to_owned()));
        }
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.to_owned()));
    }
    Ok(resolve_plain(text))
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = text.parse::<i64>() {
            return Value::Number(n.into());
        }
        if let Ok(n) = text.trim_start_matches('+').parse::<u64>() {
            return Value::Number(n.into());
        }
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(n) = i64::from_str_radix(hex, 16)
    {
        return Value::Number(n.into());
    }
    if let Some(octal) = text.strip_prefix("0o")
        && let Ok(n) = i64::from_str_radix(octal, 8)
    {
        return Value::Number(n.into());
    }
    if is_core_float(text)
        && let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64)
    {
        return Value::Number(n);
    }
    // `.inf` and `.nan` have no JSON form; nothing a manifest checker reads is one.
    Value::String(text.to_owned())
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, the core schema's float: Rust's
/// `f64` parser alone would also take `inf` and `NaN`, which YAML reads as strings.
fn is_core_float(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match fraction {
        Some(fraction) => {
            all_digits(whole) && all_digits(fraction) && !(whole.is_empty() && fraction.is_empty())
        }
        None => !whole.is_empty() && all_digits(whole),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_stream_reads_as_its_documents_with_core_schema_scalars() {
        let text = "\
---
kind: Pod
spec:
  hostNetwork: false
  runAsUser: 0
  ratio: 1.5
  version: \"1.10\"
  port: '8080'
  note: ~
  tags: [a, b]
  1.10: key
---
---
base: &base {x: 1}
copy: *base
";
        let docs = parse_yaml_documents(text).unwrap();
        assert_eq!(
            docs,
            vec![
                json!({"kind": "Pod", "spec": {
                    "hostNetwork": false, "runAsUser": 0, "ratio": 1.5, "version": "1.10",
                    "port": "8080", "note": null, "tags": ["a", "b"], "1.10": "key"}}),
                json!({"base": {"x": 1}, "copy": {"x": 1}}),
            ]
        );
    }

    #[test]
    fn yaml_a_checker_could_misread_is_refused_with_its_line() {
        let duplicate = parse_yaml_documents("a: 1\nb:\n  c: 1\n  c: 2\n").unwrap_err();
        assert_eq!(duplicate.line, 4, "{duplicate}");
        assert!(
            duplicate.message.contains("`c` is given twice"),
            "{duplicate}"
        );
        let merge = parse_yaml_documents("a: &a {x: 1}\nb:\n  <<: *a\n").unwrap_err();
        assert!(merge.message.contains("merge keys"), "{merge}");
        let syntax = parse_yaml_documents("a: [1, 2\n").unwrap_err();
        assert!(syntax.line >= 1, "{syntax}");
    }
}
