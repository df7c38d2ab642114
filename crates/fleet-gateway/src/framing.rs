//! HTTP/1.1 message heads and bodies on the wire (RFC 9112), shared by the gateway's two
//! ends: the upstream client reads answers with it (`upstream.rs`), the data plane's
//! server reads requests (`server.rs`).
//!
//! Owns: turning a parsed head's fields into a [`HeaderMap`] without a copy per value,
//! the `Content-Length` and `Connection` rules, and decoding a body framed by length,
//! by chunks or by the connection's end from a read buffer. Does not own: sockets,
//! timeouts, what a message means.

use bytes::{Buf as _, Bytes, BytesMut};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::proxy::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};

/// Most bytes of a chunk's size line or of one trailer line.
const MAX_LINE_BYTES: usize = 4 * 1024;

/// The headers httparse found in `buffer`, whose head `copy` holds.
///
/// The values are slices of one copy of the head, not a copy each (an allocation per
/// header), nor slices of the read buffer, which they would pin whole. A value kept past
/// the message (a session's upstream id) is copied on its own by its keeper.
pub(crate) fn header_map(
    fields: &[httparse::Header<'_>],
    copy: &Bytes,
    buffer: &[u8],
) -> Result<HeaderMap, &'static str> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let (Ok(name), Ok(value)) = (
            header_name(field.name.as_bytes()),
            HeaderValue::from_maybe_shared(shared(copy, buffer, field.value)),
        ) else {
            return Err("an invalid header");
        };
        headers.append(name, value);
    }
    Ok(headers)
}

/// A header's name. MCP's own names, on nearly every message, are not among HTTP's
/// standard ones, which `HeaderName` keeps without an allocation: they are matched here
/// and shared instead.
fn header_name(name: &[u8]) -> Result<HeaderName, hyper::header::InvalidHeaderName> {
    for known in [&MCP_SESSION_ID, &MCP_PROTOCOL_VERSION] {
        if name.eq_ignore_ascii_case(known.as_str().as_bytes()) {
            return Ok(known.clone());
        }
    }
    HeaderName::from_bytes(name)
}

/// `part`, a slice of `buffer` whose head `copy` holds, as the same slice of `copy`.
pub(crate) fn shared(copy: &Bytes, buffer: &[u8], part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(buffer.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= copy.len() => copy.slice(start..end),
        // Not from the head (httparse gives only slices of it): a copy of its own.
        _ => Bytes::copy_from_slice(part),
    }
}

/// The options a message's `Connection` headers list (`close`, or the names of further
/// hop-by-hop headers), trimmed.
pub(crate) fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
        .map(<[u8]>::trim_ascii)
}

/// Whether the message's `Connection` headers list `option` (`close`, `keep-alive`).
pub(crate) fn has_connection_option(headers: &HeaderMap, option: &[u8]) -> bool {
    connection_options(headers).any(|listed| listed.eq_ignore_ascii_case(option))
}

/// Whether the last coding a `Transfer-Encoding` header lists is `chunked`; `None`
/// without the header.
pub(crate) fn chunked(headers: &HeaderMap) -> Option<bool> {
    let last = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()?;
    Some(
        last.as_bytes()
            .rsplit(|byte| *byte == b',')
            .next()
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked")),
    )
}

/// The message's `Content-Length`: every value (and list item) must be the same number.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|byte| *byte == b',') {
            let item = item.trim_ascii();
            let parsed = (!item.is_empty() && item.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(item).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or("the Content-Length is not valid")?;
            if length.is_some_and(|length| length != parsed) {
                return Err("Content-Lengths that disagree");
            }
            length = Some(parsed);
        }
    }
    Ok(length)
}

/// How a body ends, and where its decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// After this many more bytes.
    Length(u64),
    /// With the last chunk; where the decoder is.
    Chunked(Chunked),
    /// When the sender closes the connection.
    UntilClose,
}

impl Framing {
    pub(crate) const CHUNKED: Self = Self::Chunked(Chunked::Size);

    /// The body has ended.
    pub(crate) fn ended(self) -> bool {
        self == Self::Length(0)
    }
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// Before a chunk's size line.
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// What the buffered bytes gave.
pub(crate) enum Decoded {
    Data(Bytes),
    End,
    /// More bytes are needed.
    More,
}

/// Takes what `buffer` holds of a body framed by `framing`, moving `framing` on; the
/// error says what is malformed.
pub(crate) fn decode(
    framing: &mut Framing,
    buffer: &mut BytesMut,
) -> Result<Decoded, &'static str> {
    loop {
        match framing {
            Framing::Length(0) => return Ok(Decoded::End),
            Framing::Length(left) => {
                if buffer.is_empty() {
                    return Ok(Decoded::More);
                }
                return Ok(Decoded::Data(take_up_to(buffer, left)));
            }
            Framing::UntilClose => {
                if buffer.is_empty() {
                    return Ok(Decoded::More);
                }
                return Ok(Decoded::Data(buffer.split().freeze()));
            }
            Framing::Chunked(state) => match *state {
                Chunked::Size => {
                    let Some(line) = take_line(buffer)? else {
                        return Ok(Decoded::More);
                    };
                    let size = chunk_size(&line)?;
                    *state = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(mut left) => {
                    if buffer.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let data = take_up_to(buffer, &mut left);
                    *state = if left == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                Chunked::DataEnd => {
                    if buffer.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if buffer[..2] != *b"\r\n" {
                        return Err("a chunk does not end in CRLF");
                    }
                    buffer.advance(2);
                    *state = Chunked::Size;
                }
                Chunked::Trailers => {
                    // Trailers mean nothing to MCP: skipped.
                    let Some(line) = take_line(buffer)? else {
                        return Ok(Decoded::More);
                    };
                    if line.is_empty() {
                        *framing = Framing::Length(0);
                    }
                }
            },
        }
    }
}

/// At most `left` bytes from the start of `buffer`, counted off `left`.
fn take_up_to(buffer: &mut BytesMut, left: &mut u64) -> Bytes {
    let take = usize::try_from(*left)
        .unwrap_or(usize::MAX)
        .min(buffer.len());
    *left -= take as u64;
    buffer.split_to(take).freeze()
}

/// The next CRLF-ended line in `buffer` (without its CRLF), taken out of it.
fn take_line(buffer: &mut BytesMut) -> Result<Option<BytesMut>, &'static str> {
    match memchr::memmem::find(buffer, b"\r\n") {
        Some(end) => {
            let line = buffer.split_to(end);
            buffer.advance(2);
            Ok(Some(line))
        }
        None if buffer.len() > MAX_LINE_BYTES => Err("a chunk line is too long"),
        None => Ok(None),
    }
}

/// A chunk's size from its line: hex digits, then maybe `;` and extensions.
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    // Whitespace may stand before extensions (RFC 9112, section 7.1.1), nowhere else.
    let digits = line.split(|byte| *byte == b';').next().unwrap_or(line);
    let digits = digits.trim_ascii_end();
    if digits.is_empty() || digits.len() > 15 {
        return Err("a chunk size is not valid");
    }
    digits.iter().try_fold(0u64, |size, digit| {
        let value = (*digit as char)
            .to_digit(16)
            .ok_or("a chunk size is not valid")?;
        Ok(size * 16 + u64::from(value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in two pieces cut at `cut`: the data, and whether it ended.
    fn decode_in_two(wire: &[u8], cut: usize) -> Result<(Vec<u8>, bool), &'static str> {
        let mut framing = Framing::CHUNKED;
        let mut buffer = BytesMut::new();
        let mut data = Vec::new();
        for piece in [&wire[..cut], &wire[cut..]] {
            buffer.extend_from_slice(piece);
            loop {
                match decode(&mut framing, &mut buffer)? {
                    Decoded::Data(bytes) => data.extend_from_slice(&bytes),
                    Decoded::End => return Ok((data, buffer.is_empty())),
                    Decoded::More => break,
                }
            }
        }
        Ok((data, false))
    }

    #[test]
    fn chunked_bodies_decode_the_same_wherever_the_reads_cut_them() {
        let wire = b"7;ext=1\r\nevent: \r\n1E\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1}\r\n0\r\nx-trailer: t\r\n\r\n";
        for cut in 0..=wire.len() {
            let (data, ended) = decode_in_two(wire, cut).unwrap();
            assert_eq!(
                data, b"event: data: {\"jsonrpc\":\"2.0\",\"id\":1}",
                "cut at {cut}"
            );
            assert!(ended, "cut at {cut}");
        }
        for bad in [
            b"zz\r\nab\r\n0\r\n\r\n".as_slice(),
            b"2\r\nabXX0\r\n\r\n",
            b"\r\n",
        ] {
            assert!(decode_in_two(bad, 0).is_err());
        }
    }

    #[test]
    fn a_parsed_head_keeps_every_header_whatever_the_case_of_its_name() {
        let wire = b"HTTP/1.1 200 OK\r\nMcp-Session-Id: s1\r\nMCP-PROTOCOL-VERSION: v\r\nX-Other: o\r\nx-other: p\r\n\r\n";
        let mut fields = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Response::new(&mut fields);
        let Ok(httparse::Status::Complete(length)) = parsed.parse(wire) else {
            panic!("not parsed");
        };
        let copy = Bytes::copy_from_slice(&wire[..length]);
        let headers = header_map(parsed.headers, &copy, wire).unwrap();
        assert_eq!(headers[&MCP_SESSION_ID], "s1");
        assert_eq!(headers[&MCP_PROTOCOL_VERSION], "v");
        let others: Vec<_> = headers.get_all("x-other").iter().collect();
        assert_eq!(others, ["o", "p"]);
        assert!(
            header_map(
                &[httparse::Header {
                    name: "bad name",
                    value: b"v"
                }],
                &copy,
                wire
            )
            .is_err()
        );
    }

    #[test]
    fn content_lengths_must_agree_and_be_digits() {
        let map = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(header::CONTENT_LENGTH, HeaderValue::from_static(value));
            }
            headers
        };
        assert_eq!(content_length(&map(&[])), Ok(None));
        assert_eq!(content_length(&map(&["12", "12, 12"])), Ok(Some(12)));
        assert!(content_length(&map(&["12", "13"])).is_err());
        assert!(content_length(&map(&["+12"])).is_err());
        assert!(content_length(&map(&[""])).is_err());
    }
}
