//! A checking skim over JSON text: every value is checked against RFC 8259's grammar
//! and skipped, and only the object members asked for are looked at. The gateway judges
//! every tool call's answer this way (`audit.rs`); a serde parse of the same message
//! cost it several times as many instructions, most of them visiting values it throws
//! away.

use std::borrow::Cow;

/// How deep arrays and objects may nest, as serde_json allows.
const MAX_DEPTH: usize = 128;

/// The bytes a string's scan stops at: its end, an escape, or a control character (which
/// JSON does not allow unescaped). A table: one load per byte instead of three tests.
const STRING_STOPS: [bool; 256] = {
    let mut stops = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        stops[byte] = true;
        byte += 1;
    }
    stops[b'"' as usize] = true;
    stops[b'\\' as usize] = true;
    stops
};

/// What a value was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Object,
    Array,
    String,
    Number,
    True,
    False,
    Null,
}

/// A position in JSON text.
pub(crate) struct Skim<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    depth: usize,
}

impl<'a> Skim<'a> {
    /// Text that is UTF-8; `None` otherwise (no JSON text is anything else).
    pub(crate) fn new(bytes: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        Some(Self {
            text,
            bytes,
            at: 0,
            depth: 0,
        })
    }

    /// The first byte of the next value (after whitespace), if any.
    pub(crate) fn first(&mut self) -> Option<u8> {
        self.whitespace();
        self.peek()
    }

    /// Whether only whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.whitespace();
        self.at == self.bytes.len()
    }

    /// The members of the object that comes next, each given to `member` with its name
    /// (decoded) and this skim before its value, which `member` must read, by
    /// [`value`](Self::value) or [`members`](Self::members).
    /// `None` when the next value is no object or is not well formed, or `member` says
    /// `None`.
    pub(crate) fn members(
        &mut self,
        mut member: impl FnMut(&mut Self, &str) -> Option<()>,
    ) -> Option<()> {
        self.items(b'{', b'}', |skim| {
            skim.whitespace();
            let (quoted, escaped) = skim.string()?;
            let name = unquoted(quoted, escaped)?;
            skim.whitespace();
            skim.expect(b':')?;
            member(skim, &name)
        })
    }

    /// The items of the array or object that comes next, opened by `open` and closed by
    /// `close`, each read by `item`.
    fn items(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.whitespace();
        self.expect(open)?;
        self.enter()?;
        self.whitespace();
        if self.peek() == Some(close) {
            self.at += 1;
        } else {
            loop {
                item(self)?;
                self.whitespace();
                match self.next()? {
                    b',' => {}
                    byte if byte == close => break,
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// Skips the next value; its kind, or `None` when it is not well formed.
    pub(crate) fn value(&mut self) -> Option<Kind> {
        self.whitespace();
        match self.peek()? {
            b'{' => {
                self.members(|skim, _| skim.value().map(drop))?;
                Some(Kind::Object)
            }
            b'[' => {
                self.items(b'[', b']', |skim| skim.value().map(drop))?;
                Some(Kind::Array)
            }
            b'"' => self.string().map(|_| Kind::String),
            b't' => self.literal(b"true").map(|()| Kind::True),
            b'f' => self.literal(b"false").map(|()| Kind::False),
            b'n' => self.literal(b"null").map(|()| Kind::Null),
            b'-' | b'0'..=b'9' => self.number().map(|()| Kind::Number),
            _ => None,
        }
    }

    /// Whether the next value is an object (read it by [`members`](Self::members)).
    pub(crate) fn next_is_object(&mut self) -> bool {
        self.first() == Some(b'{')
    }

    /// Skips the next value: its kind and its text, or `None` when it is not well formed.
    pub(crate) fn raw_value(&mut self) -> Option<(Kind, &'a str)> {
        self.whitespace();
        let start = self.at;
        let kind = self.value()?;
        // Both ends are ASCII (a value starts and ends with one): char boundaries.
        Some((kind, &self.text[start..self.at]))
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let rest = self.bytes.get(self.at..)?;
        rest.starts_with(word).then(|| self.at += word.len())
    }

    /// A string, quotes included, its escapes checked (not decoded), and whether it has
    /// any.
    fn string(&mut self) -> Option<(&'a str, bool)> {
        let start = self.at;
        self.expect(b'"')?;
        let mut escaped = false;
        loop {
            // Straight to the next byte that matters: most strings have none but their end.
            let rest = self.bytes.get(self.at..)?;
            self.at += rest.iter().position(|&b| STRING_STOPS[usize::from(b)])?;
            match self.next()? {
                b'"' => return Some((&self.text[start..self.at], escaped)),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => escaped = true,
                    b'u' => {
                        escaped = true;
                        for _ in 0..4 {
                            if !self.next()?.is_ascii_hexdigit() {
                                return None;
                            }
                        }
                    }
                    _ => return None,
                },
                _ => return None,
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }
}

/// The text of a string value (quotes included) that a skim checked: borrowed unless it
/// has escapes.
pub(crate) fn string_text(quoted: &str) -> Option<Cow<'_, str>> {
    unquoted(quoted, quoted.contains('\\'))
}

/// [`string_text`] of a string whose skim said whether it has escapes.
fn unquoted(quoted: &str, escaped: bool) -> Option<Cow<'_, str>> {
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    if escaped {
        serde_json::from_str::<String>(quoted).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Whether the skim takes `text` as one JSON value.
    fn skims(text: &[u8]) -> bool {
        Skim::new(text).is_some_and(|mut skim| skim.value().is_some() && skim.at_end())
    }

    #[test]
    fn well_formed_values_are_taken_and_ill_formed_ones_refused() {
        for good in [
            r#"{}"#,
            r#"[]"#,
            r#" { "a" : [1, -2.5e+3, 0, 0.0, 1E9, "x\"\\\/\b\f\n\r\t\u00e9", true, false, null, {}] } "#,
            r#""é""#,
            "-0",
        ] {
            assert!(skims(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "{",
            "}",
            "[1,]",
            "{,}",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            "01",
            "1.",
            "1e",
            "-",
            "+1",
            ".5",
            "tru",
            "nul",
            r#""\x""#,
            r#""\u12G4""#,
            "\"\u{1}\"",
            r#""abc"#,
            "[1 2]",
            r#"{"a":1 "b":2}"#,
            "1 2",
        ] {
            assert!(!skims(bad.as_bytes()), "{bad}");
        }
        assert!(!skims(b"\"\xff\""));
        let deep = |n| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(skims(deep(MAX_DEPTH).as_bytes()));
        assert!(!skims(deep(MAX_DEPTH + 1).as_bytes()));
    }

    #[test]
    fn member_names_are_decoded() {
        let mut names = Vec::new();
        let mut skim = Skim::new(br#"{"plain":1,"is\u0045rror":2,"a\"b":{"inner":3}}"#).unwrap();
        skim.members(|skim, name| {
            names.push(name.to_owned());
            skim.value().map(drop)
        })
        .unwrap();
        assert!(skim.at_end());
        assert_eq!(names, ["plain", "isError", "a\"b"]);
    }

    proptest! {
        #[test]
        fn the_skim_agrees_with_serde_json_on_any_text(text in "[ \\[\\]{}:,\"\\\\a-fu0-9.eE+\\-tnrl]{0,24}") {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok();
            prop_assert_eq!(skims(text.as_bytes()), serde, "{}", text);
        }

        #[test]
        fn the_skim_takes_every_json_value_serde_json_writes(value in json_value()) {
            let text = serde_json::to_string(&value).unwrap();
            prop_assert!(skims(text.as_bytes()), "{}", text);
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            prop_assert!(skims(pretty.as_bytes()), "{}", pretty);
        }
    }

    /// Any JSON value of up to `depth` levels, its strings and member names drawn from
    /// `strings` and `names`.
    pub(crate) fn json_value_of(
        strings: impl Strategy<Value = String> + Clone + 'static,
        names: impl Strategy<Value = String> + Clone + 'static,
        depth: u32,
        members: usize,
    ) -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            strings.prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(depth, 32, members as u32, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(names.clone(), inner, 0..members)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        json_value_of(any::<String>(), any::<String>(), 4, 4)
    }
}
