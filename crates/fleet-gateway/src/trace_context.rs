//! The W3C Trace Context a request arrives with: its `traceparent` header
//! (<https://www.w3.org/TR/trace-context/#traceparent-header>), whose trace id the latency
//! histogram keeps as an exemplar and whose parent the `gateway request` span continues.
//! Only parsing lives here; starting and propagating spans is [`crate::request_span`]'s.

use axum::http::HeaderMap;
use std::fmt;

/// A W3C trace id: 16 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

impl TraceId {
    /// `bytes` as a trace id; `None` for all zeros, which the spec reserves as invalid.
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(Self(bytes))
    }

    /// The 16 bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// The trace id of a request's `traceparent` header; `None` without one, or when it
    /// is malformed (the spec says to ignore such a header, not to refuse the request).
    pub fn of_request(headers: &HeaderMap) -> Option<Self> {
        TraceParent::of_request(headers).map(|parent| parent.trace_id)
    }
}

/// A valid `traceparent`: the caller's span, in its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent {
    pub(crate) trace_id: TraceId,
    /// The caller's span id, never all zeros.
    pub(crate) parent_id: [u8; 8],
    /// `trace-flags`; bit 0 says the caller sampled the trace.
    pub(crate) flags: u8,
}

impl TraceParent {
    /// A request's `traceparent` header; `None` without one, or when it is malformed.
    pub(crate) fn of_request(headers: &HeaderMap) -> Option<Self> {
        Self::parse(headers.get("traceparent")?.as_bytes())
    }

    /// A `traceparent` value, `version-traceid-parentid-flags` in lowercase hex: `None`
    /// when it is malformed, the version is `ff`, or the trace or parent id is all zeros.
    /// Version `00` is exactly 55 characters; a later version may append fields after a
    /// `-`, which are ignored.
    pub(crate) fn parse(value: &[u8]) -> Option<Self> {
        let (head, rest) = value.split_at_checked(55)?;
        let version = lowercase_hex::<1>(&head[..2])?;
        let well_formed = head[2] == b'-' && head[35] == b'-' && head[52] == b'-';
        let trailing_ok = match version {
            [0x00] => rest.is_empty(),
            [0xff] => false,
            _ => rest.first().is_none_or(|b| *b == b'-'),
        };
        let parent_id = lowercase_hex::<8>(&head[36..52])?;
        let [flags] = lowercase_hex::<1>(&head[53..55])?;
        if !well_formed || !trailing_ok || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id: TraceId::from_bytes(lowercase_hex::<16>(&head[3..35])?)?,
            parent_id,
            flags,
        })
    }
}

/// `N` bytes from `2 * N` lowercase hex digits (the spec allows no uppercase).
fn lowercase_hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(bytes)
}

/// 32 lowercase hex digits, as in `traceparent`.
impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_gives_its_trace_id() {
        let parent = TraceParent::parse(VALID.as_bytes()).unwrap();
        let id = parent.trace_id;
        assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            parent.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(parent.flags, 0x01);
        let later_version = format!("cc{}-what-comes-later", &VALID[2..]);
        assert_eq!(
            TraceParent::parse(later_version.as_bytes()).map(|parent| parent.trace_id),
            Some(id)
        );
    }

    #[test]
    fn a_malformed_or_all_zero_traceparent_gives_none() {
        for value in [
            "",
            &VALID[..54],
            &format!("{VALID}-x"),
            &VALID.to_uppercase(),
            &VALID.replace("00-4bf", "ff-4bf"),
            &VALID.replace('-', "_"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            &format!("cc{}x", &VALID[2..]),
        ] {
            assert_eq!(
                TraceParent::parse(value.as_bytes()).map(|parent| parent.trace_id),
                None,
                "{value}"
            );
        }
        assert_eq!(TraceId::from_bytes([0; 16]), None);
    }
}
