//! A located YAML tree: every node knows where it came from.
//!
//! The event parser (saphyr-parser) gives positions; this module builds a small tree from
//! its events and enforces what a configuration file may not do: several documents,
//! duplicate keys, complex keys, deep nesting, alias expansion beyond a node budget (the
//! "billion laughs" attack). Merge keys (`<<: *base`) are supported because people use them
//! to share blocks between servers.

use crate::diag::{Diagnostic, Span};
use saphyr_parser::{Event, Parser, ScalarStyle, Span as YamlSpan};
use std::collections::HashMap;
use std::fmt::Write as _;

/// Nesting deeper than this is certainly not a fleet file, and would cost stack later.
pub const MAX_DEPTH: usize = 64;
/// Total nodes the tree may hold after alias expansion.
pub const MAX_NODES: usize = 500_000;

/// One YAML node and where it stands in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Span,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar as written. `plain` is false for quoted and block scalars, which are always
    /// strings; plain ones are resolved (null, bool, number) by whoever reads them.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in file order; keys are scalars.
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if is_null_text(text))
    }

    /// The text of a scalar node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Looks up a key of a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short name of the node's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "nothing (null)",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    fn weight(&self) -> usize {
        1 + match &self.value {
            Value::Scalar { .. } => 0,
            Value::Seq(items) => items.iter().map(Node::weight).sum(),
            Value::Map(entries) => entries.iter().map(|(k, v)| k.weight() + v.weight()).sum(),
        }
    }

    /// Overlays `other` onto `self`: mappings merge key by key (recursively), anything else
    /// is replaced. This is how `environments.<name>` applies to the base file.
    pub fn merge(&mut self, other: Node) {
        match (&mut self.value, other.value) {
            (Value::Map(base), Value::Map(over)) => {
                for (key, value) in over {
                    match base.iter_mut().find(|(k, _)| k.as_str() == key.as_str()) {
                        Some((_, existing)) => existing.merge(value),
                        None => base.push((key, value)),
                    }
                }
            }
            (_, value) => {
                self.value = value;
                self.span = other.span;
            }
        }
    }
}

pub(crate) fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn span(s: &YamlSpan) -> Span {
    Span {
        line: s.start.line() as u32,
        column: s.start.col() as u32 + 1,
        end_line: s.end.line() as u32,
        end_column: s.end.col() as u32 + 1,
    }
}

enum Frame {
    Seq {
        start: Span,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: Span,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// Parses one YAML document into a located tree.
///
/// # Errors
/// Returns the first syntax error (YAML cannot be parsed past one), or the limits and rules
/// above broken, each located.
pub fn parse(text: &str) -> Result<Node, Diagnostic> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    let mut nodes = 0usize;
    let mut documents = 0usize;
    let mut root: Option<Node> = None;

    while let Some(event) = parser.next_event() {
        let (event, yspan) = event.map_err(|e| {
            let m = e.marker();
            Diagnostic::error(
                format!("invalid YAML: {}", e.info()),
                Some(Span::point(m.line() as u32, m.col() as u32 + 1)),
            )
            .with_help("fix the YAML syntax here; indentation must use spaces and be consistent")
        })?;
        let here = span(&yspan);
        let done = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(Diagnostic::error(
                        "a fleet file holds exactly one YAML document",
                        Some(here),
                    )
                    .with_help(
                        "remove this `---` and everything after it, or split it into another file",
                    ));
                }
                None
            }
            Event::Alias(id) => {
                let (node, weight) = anchors.get(&id).ok_or_else(|| {
                    Diagnostic::error("alias refers to an unknown anchor", Some(here))
                })?;
                nodes += weight;
                if nodes > MAX_NODES {
                    return Err(alias_budget(here));
                }
                Some(Node {
                    span: here,
                    ..node.clone()
                })
            }
            Event::Scalar(text, style, anchor, tag) => {
                if let Some(tag) = tag
                    && !tag.is_yaml_core_schema()
                {
                    return Err(Diagnostic::error(
                        format!("YAML tag `{}{}` is not supported", tag.handle, tag.suffix),
                        Some(here),
                    )
                    .with_help("remove the tag; values are plain strings, numbers, booleans, lists and mappings"));
                }
                nodes += 1;
                let node = Node {
                    span: here,
                    value: Value::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                };
                if anchor > 0 {
                    anchors.insert(anchor, (node.clone(), 1));
                }
                Some(node)
            }
            Event::SequenceStart(anchor, _) => {
                push_frame(
                    &mut stack,
                    Frame::Seq {
                        start: here,
                        anchor,
                        items: Vec::new(),
                    },
                    here,
                )?;
                None
            }
            Event::MappingStart(anchor, _) => {
                let frame = Frame::Map {
                    start: here,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                };
                push_frame(&mut stack, frame, here)?;
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    start,
                    anchor,
                    items,
                }) => {
                    nodes += 1;
                    let node = Node {
                        span: join(start, here),
                        value: Value::Seq(items),
                    };
                    remember(&mut anchors, anchor, &node);
                    Some(node)
                }
                _ => unreachable_event(here)?,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    start,
                    anchor,
                    entries,
                    ..
                }) => {
                    nodes += 1;
                    let entries = apply_merge_keys(entries)?;
                    check_duplicate_keys(&entries)?;
                    let node = Node {
                        span: join(start, here),
                        value: Value::Map(entries),
                    };
                    remember(&mut anchors, anchor, &node);
                    Some(node)
                }
                _ => unreachable_event(here)?,
            },
        };
        if let Some(node) = done {
            match stack.last_mut() {
                None => root = Some(node),
                Some(Frame::Seq { items, .. }) => items.push(node),
                Some(Frame::Map { entries, key, .. }) => match key.take() {
                    None => {
                        if !matches!(node.value, Value::Scalar { .. }) {
                            return Err(Diagnostic::error(
                                "mapping keys must be plain names",
                                Some(node.span),
                            )
                            .with_help("use a simple string as the key"));
                        }
                        *key = Some(node);
                    }
                    Some(k) => entries.push((k, node)),
                },
            }
        }
    }
    root.ok_or_else(|| {
        Diagnostic::error("the fleet file is empty", None)
            .with_help("run `mcpfleet init` to write a commented starter file")
    })
}

fn push_frame(stack: &mut Vec<Frame>, frame: Frame, here: Span) -> Result<(), Diagnostic> {
    if stack.len() >= MAX_DEPTH {
        return Err(Diagnostic::error(
            format!("YAML nested more than {MAX_DEPTH} levels deep"),
            Some(here),
        )
        .with_help("a fleet file never needs this depth; flatten the structure"));
    }
    stack.push(frame);
    Ok(())
}

fn remember(anchors: &mut HashMap<usize, (Node, usize)>, anchor: usize, node: &Node) {
    if anchor > 0 {
        anchors.insert(anchor, (node.clone(), node.weight()));
    }
}

fn alias_budget(here: Span) -> Diagnostic {
    Diagnostic::error(
        format!("YAML aliases expand to more than {MAX_NODES} nodes"),
        Some(here),
    )
    .with_help("this looks like an alias bomb; write the values out or reference fewer anchors")
}

fn unreachable_event<T>(here: Span) -> Result<T, Diagnostic> {
    Err(Diagnostic::error(
        "invalid YAML: unbalanced collection",
        Some(here),
    ))
}

fn join(start: Span, end: Span) -> Span {
    Span {
        end_line: end.end_line,
        end_column: end.end_column,
        ..start
    }
}

/// `<<: *base` (or `<<: [*a, *b]`) copies the keys of the referenced mappings that this
/// mapping does not set itself.
fn apply_merge_keys(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, Diagnostic> {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return Ok(entries);
    }
    let mut own = Vec::new();
    let mut merged = Vec::new();
    for (key, value) in entries {
        if !is_merge_key(&key) {
            own.push((key, value));
            continue;
        }
        let sources = match value.value {
            Value::Map(_) => vec![value],
            Value::Seq(items) => items,
            Value::Scalar { .. } => vec![value],
        };
        for source in sources {
            match source.value {
                Value::Map(from) => merged.extend(from),
                _ => {
                    return Err(Diagnostic::error(
                        "a merge key (`<<`) takes a mapping or a list of mappings",
                        Some(source.span),
                    )
                    .with_help("write `<<: *anchor` where the anchor names a mapping"));
                }
            }
        }
    }
    for (key, value) in merged {
        if !own.iter().any(|(k, _)| k.as_str() == key.as_str()) {
            own.push((key, value));
        }
    }
    Ok(own)
}

fn is_merge_key(key: &Node) -> bool {
    matches!(&key.value, Value::Scalar { text, plain: true } if text == "<<")
}

fn check_duplicate_keys(entries: &[(Node, Node)]) -> Result<(), Diagnostic> {
    let mut seen: HashMap<&str, Span> = HashMap::with_capacity(entries.len());
    for (key, _) in entries {
        let name = key.as_str().unwrap_or_default();
        if let Some(first) = seen.insert(name, key.span) {
            return Err(
                Diagnostic::error(format!("duplicate key `{name}`"), Some(key.span))
                    .with_label(format!("first defined on line {}", first.line))
                    .with_help("keep one of the two; YAML would silently drop the first"),
            );
        }
    }
    Ok(())
}

/// A double-quoted scalar that is both valid YAML and valid JSON, for YAML that mcpfleet
/// writes (`import`, `render kubernetes`). Characters YAML does not allow raw, and invisible
/// ones that could hide what a line says, are escaped.
pub fn double_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                // Writing into a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Control characters, zero-width and bidirectional marks, line and paragraph separators,
/// the byte-order mark and non-characters: never written raw.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_scalars() {
        let node = parse("a:\n  b: hello\n").unwrap();
        let b = node.get("a").and_then(|a| a.get("b")).unwrap();
        assert_eq!(b.as_str(), Some("hello"));
        assert_eq!((b.span.line, b.span.column, b.span.end_column), (2, 6, 11));
    }

    #[test]
    fn merge_keys_fill_missing_entries_only() {
        let node = parse("base: &b {x: 1, y: 2}\nsrv:\n  <<: *b\n  y: 3\n").unwrap();
        let srv = node.get("srv").unwrap();
        assert_eq!(srv.get("x").and_then(Node::as_str), Some("1"));
        assert_eq!(srv.get("y").and_then(Node::as_str), Some("3"));
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("aliases expand"), "{err:?}");
    }
}
