//! A serde `Deserializer` over the located YAML tree.
//!
//! Serde's derive is the single description of the file format (and, through schemars, of
//! the JSON Schema). This deserializer adds what a configuration file needs on top:
//! - every error carries the span of the node it is about;
//! - unknown keys are reported (with a "did you mean") and skipped instead of aborting, so
//!   one typo does not hide the next;
//! - [`Spanned<T>`] captures where a value was written, for later semantic errors;
//! - [`Recover<T>`] turns a structural error inside `T` into a recorded diagnostic and a
//!   `None`, so one broken server does not hide the errors of the others.
//!
//! `Spanned` and `Recover` only work with this deserializer; they exist for the fleet file.

use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::yaml::{Node, Value, is_null_text};
use schemars::JsonSchema;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::cell::RefCell;
use std::fmt;

const SPANNED: &str = "$__fleet_spanned";
const SPANNED_FIELDS: &[&str] = &["$__span", "$__value"];
const RECOVER: &str = "$__fleet_recover";
const RECOVER_FIELDS: &[&str] = &["$__value"];

/// Diagnostics recorded while decoding, in the order found.
#[derive(Debug, Default)]
pub(crate) struct Sink(RefCell<Vec<Diagnostic>>);

impl Sink {
    pub(crate) fn push(&self, d: Diagnostic) {
        self.0.borrow_mut().push(d);
    }

    pub(crate) fn into_inner(self) -> Vec<Diagnostic> {
        self.0.into_inner()
    }
}

/// Decodes `T` from a node; structural errors not caught by a [`Recover`] go to the sink too.
pub(crate) fn decode<'de, T: Deserialize<'de>>(node: &'de Node, sink: &'de Sink) -> Option<T> {
    match T::deserialize(NodeDe { node, sink }) {
        Ok(value) => Some(value),
        Err(e) => {
            e.report(sink);
            None
        }
    }
}

/// A value with the span it was written at. Compares and hashes by value only.
#[derive(Debug, Clone, Default)]
pub struct Spanned<T> {
    pub span: Span,
    pub value: T,
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned { span, value }
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<T>()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a located value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let _: Option<de::IgnoredAny> = map.next_key()?;
                let (line, column, end_line, end_column) = map.next_value()?;
                let _: Option<de::IgnoredAny> = map.next_key()?;
                let value = map.next_value()?;
                Ok(Spanned {
                    span: Span {
                        line,
                        column,
                        end_line,
                        end_column,
                    },
                    value,
                })
            }
        }
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, V(std::marker::PhantomData))
    }
}

/// A part of the file decoded on its own: if it is malformed, its error is recorded and the
/// part becomes `None`, and decoding goes on with its siblings.
#[derive(Debug, Clone, PartialEq)]
pub struct Recover<T>(pub Option<T>);

impl<T> Default for Recover<T> {
    fn default() -> Self {
        Recover(None)
    }
}

impl<T> Recover<T> {
    /// The value, if present and well-formed.
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<T: JsonSchema> JsonSchema for Recover<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<T>()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Recover<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Recover<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a recoverable value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let _: Option<de::IgnoredAny> = map.next_key()?;
                // The deserializer has already recorded the error; dropping it is the point.
                Ok(Recover(map.next_value().ok()))
            }
        }
        d.deserialize_struct(RECOVER, RECOVER_FIELDS, V(std::marker::PhantomData))
    }
}

/// A decoding error, located once it has passed through the node it concerns.
#[derive(Debug)]
pub(crate) struct DeError {
    span: Option<Span>,
    message: String,
    label: Option<String>,
    help: Option<String>,
    /// Set when the error is already in the sink (caught by a `Recover`).
    reported: bool,
}

impl DeError {
    fn new(message: impl Into<String>) -> Self {
        DeError {
            span: None,
            message: message.into(),
            label: None,
            help: None,
            reported: false,
        }
    }

    fn at(mut self, span: Span) -> Self {
        self.span.get_or_insert(span);
        self
    }

    fn report(self, sink: &Sink) {
        if !self.reported {
            let mut d = Diagnostic::error(self.message, self.span);
            d.label = self.label;
            d.help = self.help;
            sink.push(d);
        }
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(msg.to_string())
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut e = DeError::new(format!("unknown value `{variant}`"));
        e.label =
            did_you_mean(variant, expected.iter().copied()).map(|s| format!("did you mean `{s}`?"));
        e.help = Some(format!("use one of: {}", expected.join(", ")));
        e
    }

    fn missing_field(field: &'static str) -> Self {
        let mut e = DeError::new(format!("missing required key `{field}`"));
        e.help = Some(format!("add `{field}:` to this block"));
        e
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        unknown_key(field, expected)
    }
}

fn unknown_key(field: &str, expected: &[&str]) -> DeError {
    let mut e = DeError::new(format!("unknown key `{field}`"));
    e.label = did_you_mean(field, expected.iter().copied()).map(|s| format!("did you mean `{s}`?"));
    e.help = Some(format!("valid keys here: {}", expected.join(", ")));
    e
}

#[derive(Clone, Copy)]
struct NodeDe<'a> {
    node: &'a Node,
    sink: &'a Sink,
}

impl<'a> NodeDe<'a> {
    fn wrong(&self, expected: &str) -> DeError {
        let found = match &self.node.value {
            Value::Scalar { text, .. } if !self.node.is_null() => {
                let shown: String = text.chars().take(40).collect();
                format!("`{shown}`")
            }
            _ => self.node.kind().to_string(),
        };
        DeError::new(format!("expected {expected}, found {found}")).at(self.node.span)
    }

    fn scalar(&self) -> Option<(&'a str, bool)> {
        match &self.node.value {
            Value::Scalar { text, plain } => Some((text.as_str(), *plain)),
            _ => None,
        }
    }

    fn number<T: std::str::FromStr>(&self, expected: &str) -> Result<T, DeError> {
        match self.scalar() {
            Some((text, _)) => text
                .trim()
                .replace('_', "")
                .parse()
                .map_err(|_| self.wrong(expected)),
            None => Err(self.wrong(expected)),
        }
    }

    fn locate<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.at(self.node.span))
    }
}

macro_rules! number_methods {
    ($($method:ident $visit:ident $ty:ty, $what:literal;)*) => {$(
        fn $method<V: Visitor<'a>>(self, v: V) -> Result<V::Value, DeError> {
            let n: $ty = self.number($what)?;
            self.locate(v.$visit(n))
        }
    )*};
}

impl<'a> Deserializer<'a> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'a>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Scalar { text, plain: true } => {
                let t = text.as_str();
                if is_null_text(t) {
                    v.visit_unit()
                } else if let Some(b) = parse_bool(t) {
                    v.visit_bool(b)
                } else if let Ok(i) = t.parse::<i64>() {
                    v.visit_i64(i)
                } else if let Ok(f) = t.parse::<f64>().map_err(|_| ()).and_then(|f| {
                    if t.chars().any(|c| c.is_ascii_digit()) {
                        Ok(f)
                    } else {
                        Err(())
                    }
                }) {
                    v.visit_f64(f)
                } else {
                    v.visit_borrowed_str(t)
                }
            }
            Value::Scalar { text, plain: false } => v.visit_borrowed_str(text),
            Value::Seq(_) => return self.deserialize_seq(v),
            Value::Map(_) => return self.deserialize_map(v),
        };
        self.locate(r)
    }

    fn deserialize_bool<V: Visitor<'a>>(self, v: V) -> Result<V::Value, DeError> {
        match self
            .scalar()
            .and_then(|(t, plain)| plain.then(|| parse_bool(t)).flatten())
        {
            Some(b) => self.locate(v.visit_bool(b)),
            None => Err(self.wrong("true or false")),
        }
    }

    number_methods! {
        deserialize_i8 visit_i8 i8, "a whole number";
        deserialize_i16 visit_i16 i16, "a whole number";
        deserialize_i32 visit_i32 i32, "a whole number";
        deserialize_i64 visit_i64 i64, "a whole number";
        deserialize_u8 visit_u8 u8, "a whole number from 0 to 255";
        deserialize_u16 visit_u16 u16, "a whole number from 0 to 65535";
        deserialize_u32 visit_u32 u32, "a whole number, 0 or more";
        deserialize_u64 visit_u64 u64, "a whole number, 0 or more";
        deserialize_f32 visit_f32 f32, "a number";
        deserialize_f64 visit_f64 f64, "a number";
    }

    fn deserialize_char<V: Visitor<'a>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_str<V: Visitor<'a>>(self, v: V) -> Result<V::Value, DeError> {
        match self.scalar() {
            Some((t, plain)) if !(plain && is_null_text(t)) => self.locate(v.visit_borrowed_str(t)),
            _ => Err(self.wrong("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'a>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_bytes<V: Visitor<'a>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_byte_buf<V: Visitor<'a>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'a>>(self, v: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            self.locate(v.visit_none())
        } else {
            v.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, v: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            self.locate(v.visit_unit())
        } else {
            Err(self.wrong("nothing"))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'a>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(items) => self.locate(v.visit_seq(SeqDe {
                items: items.iter(),
                sink: self.sink,
            })),
            _ => Err(self.wrong("a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'a>>(self, _: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'a>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(entries) => self.locate(v.visit_map(MapDe::new(entries, None, self.sink))),
            _ => Err(self.wrong("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match name {
            SPANNED => {
                let s = self.node.span;
                let span = [s.line, s.column, s.end_line, s.end_column];
                v.visit_map(SpecialMap {
                    span: Some(span),
                    value: Some(self),
                })
            }
            // An empty section (`health:`) is simply absent.
            RECOVER if self.node.is_null() => v.visit_map(SpecialMap {
                span: None,
                value: None,
            }),
            RECOVER => v.visit_map(SpecialMap {
                span: None,
                value: Some(self),
            }),
            _ => match &self.node.value {
                Value::Map(entries) => {
                    self.locate(v.visit_map(MapDe::new(entries, Some(fields), self.sink)))
                }
                _ => Err(self.wrong("a mapping")),
            },
        }
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar { .. } if !self.node.is_null() => self.locate(v.visit_enum(EnumDe {
                tag: self,
                value: None,
            })),
            Value::Map(entries) if entries.len() == 1 => {
                let (key, value) = &entries[0];
                let tag = NodeDe {
                    node: key,
                    sink: self.sink,
                };
                self.locate(v.visit_enum(EnumDe {
                    tag,
                    value: Some(NodeDe {
                        node: value,
                        sink: self.sink,
                    }),
                }))
            }
            _ => Err(self.wrong("one of the listed values")),
        }
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }
}

fn parse_bool(t: &str) -> Option<bool> {
    match t {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

struct SeqDe<'a> {
    items: std::slice::Iter<'a, Node>,
    sink: &'a Sink,
}

impl<'a> SeqAccess<'a> for SeqDe<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed
                .deserialize(NodeDe {
                    node,
                    sink: self.sink,
                })
                .map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    /// The keys a struct accepts; other keys are reported and skipped.
    fields: Option<&'static [&'static str]>,
    value: Option<&'a Node>,
    sink: &'a Sink,
}

impl<'a> MapDe<'a> {
    fn new(
        entries: &'a [(Node, Node)],
        fields: Option<&'static [&'static str]>,
        sink: &'a Sink,
    ) -> Self {
        MapDe {
            entries: entries.iter(),
            fields,
            value: None,
            sink,
        }
    }
}

impl<'a> MapAccess<'a> for MapDe<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for (key, value) in self.entries.by_ref() {
            if let Some(fields) = self.fields {
                let name = key.as_str().unwrap_or_default();
                if !fields.contains(&name) {
                    unknown_key(name, fields).at(key.span).report(self.sink);
                    continue;
                }
            }
            self.value = Some(value);
            return seed
                .deserialize(NodeDe {
                    node: key,
                    sink: self.sink,
                })
                .map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let node = self
            .value
            .take()
            .ok_or_else(|| DeError::new("value requested before key"))?;
        seed.deserialize(NodeDe {
            node,
            sink: self.sink,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// The two-entry map behind `Spanned` (span, value) and the one-entry map behind `Recover`.
struct SpecialMap<'a> {
    span: Option<[u32; 4]>,
    value: Option<NodeDe<'a>>,
}

impl<'a> MapAccess<'a> for SpecialMap<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let key = if self.span.is_some() {
            "$__span"
        } else if self.value.is_some() {
            "$__value"
        } else {
            return Ok(None);
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        if let Some(span) = self.span.take() {
            return seed.deserialize(de::value::SeqDeserializer::new(span.into_iter()));
        }
        let inner = self
            .value
            .take()
            .ok_or_else(|| DeError::new("value requested twice"))?;
        match seed.deserialize(inner) {
            Ok(v) => Ok(v),
            // Only `Recover` ends here with an error: record it so the parent can go on.
            Err(e) => {
                let e = e.at(inner.node.span);
                let message = e.message.clone();
                e.report(inner.sink);
                Err(DeError {
                    reported: true,
                    ..DeError::new(message)
                })
            }
        }
    }
}

struct EnumDe<'a> {
    tag: NodeDe<'a>,
    value: Option<NodeDe<'a>>,
}

impl<'a> de::EnumAccess<'a> for EnumDe<'a> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<T: DeserializeSeed<'a>>(self, seed: T) -> Result<(T::Value, Self), DeError> {
        let tag = self.tag;
        let v = seed.deserialize(tag).map_err(|e| e.at(tag.node.span))?;
        Ok((v, self))
    }
}

impl<'a> de::VariantAccess<'a> for EnumDe<'a> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            Some(v) if !v.node.is_null() => Err(v.wrong("nothing after this value")),
            _ => Ok(()),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'a>>(self, seed: T) -> Result<T::Value, DeError> {
        match self.value {
            Some(v) => seed.deserialize(v),
            None => Err(self.tag.wrong("a mapping with one key")),
        }
    }

    fn tuple_variant<V: Visitor<'a>>(self, _: usize, v: V) -> Result<V::Value, DeError> {
        match self.value {
            Some(n) => n.deserialize_seq(v),
            None => Err(self.tag.wrong("a mapping with one key")),
        }
    }

    fn struct_variant<V: Visitor<'a>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        match self.value {
            Some(n) => n.deserialize_struct("", fields, v),
            None => Err(self.tag.wrong("a mapping with one key")),
        }
    }
}
