//! `bench-gateway-serve --raw-http-relay HOST:PORT`: the least a hop that reads HTTP can
//! do. It parses each request head and each response head (`httparse`), frames their
//! bodies (`Content-Length`, or the chunks of a chunked answer) so it knows where one
//! exchange ends and the next begins on a kept-alive connection, and passes every byte on
//! unchanged, each read written on in one piece. No framework, no header map, no
//! allocation per request: one upstream connection per client connection, for its life.
//!
//! It is no proxy anyone should run (no timeouts, no limits, no `Host` rewrite), only the
//! floor under any HTTP gateway's cost on this machine, which the hyper relay (the floor
//! of the stack mcpfleet is built on) and the product rows are set against.

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Headers a head may have, at most.
const MAX_HEADERS: usize = 64;

/// Serves until its stdin closes.
pub(crate) async fn serve(upstream: &str) -> Result<()> {
    let upstream = upstream.to_owned();
    crate::bench_gateway::relay_each(move |client| {
        let upstream = upstream.clone();
        async move {
            if let Err(error) = relay(client, &upstream).await {
                eprintln!("raw HTTP relay: {error:#}");
            }
        }
    })
    .await
}

/// One client connection's exchanges, in order, over one upstream connection.
async fn relay(mut client: TcpStream, upstream: &str) -> Result<()> {
    let mut server = TcpStream::connect(upstream)
        .await
        .with_context(|| format!("connect to {upstream}"))?;
    server.set_nodelay(true)?;
    let mut from_client = BytesMut::with_capacity(16 * 1024);
    let mut from_server = BytesMut::with_capacity(16 * 1024);
    loop {
        let Some(request) = head(&mut from_client, &mut client, request_head).await? else {
            return Ok(());
        };
        let Some(body @ Body::Length(_)) = request.body else {
            bail!("a request body without Content-Length");
        };
        pass(
            &mut from_client,
            request.length,
            body,
            &mut client,
            &mut server,
        )
        .await?;
        let Some(response) = head(&mut from_server, &mut server, response_head).await? else {
            bail!("the upstream closed before answering");
        };
        let Some(body) = response.body else {
            // An answer that ends with its connection: so does this one.
            client.write_all(&from_server).await?;
            tokio::io::copy(&mut server, &mut client).await?;
            return Ok(());
        };
        pass(
            &mut from_server,
            response.length,
            body,
            &mut server,
            &mut client,
        )
        .await?;
    }
}

/// A parsed head: its length in bytes and where its body ends (`None`: with the
/// connection).
struct Head {
    length: usize,
    body: Option<Body>,
}

/// The next head in `buffer`, read from `from` as needed; `None` when `from` closes
/// between messages.
async fn head(
    buffer: &mut BytesMut,
    from: &mut TcpStream,
    parse: fn(&[u8]) -> Result<Option<Head>>,
) -> Result<Option<Head>> {
    loop {
        if !buffer.is_empty()
            && let Some(head) = parse(buffer)?
        {
            return Ok(Some(head));
        }
        if from.read_buf(buffer).await? == 0 {
            if buffer.is_empty() {
                return Ok(None);
            }
            bail!("the connection closed within a head");
        }
    }
}

fn request_head(bytes: &[u8]) -> Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(length) = request.parse(bytes)? else {
        return Ok(None);
    };
    let body = framing(request.headers)?.unwrap_or(Body::Length(0));
    Ok(Some(Head {
        length,
        body: Some(body),
    }))
}

fn response_head(bytes: &[u8]) -> Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(length) = response.parse(bytes)? else {
        return Ok(None);
    };
    let body = match response.code {
        Some(100..=199 | 204 | 304) => Some(Body::Length(0)),
        _ => framing(response.headers)?,
    };
    Ok(Some(Head { length, body }))
}

/// The framing the headers give, if any.
fn framing(headers: &[httparse::Header<'_>]) -> Result<Option<Body>> {
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Ok(Some(Body::Chunked(Chunks::default())));
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(header.value)?.trim().parse()?;
            return Ok(Some(Body::Length(length)));
        }
    }
    Ok(None)
}

/// Writes the message at the start of `buffer` — its head of `head` bytes, then its `body`
/// — to `to`, reading the rest from `from` as it comes, each read written on in one piece;
/// what follows the message stays in `buffer`.
async fn pass(
    buffer: &mut BytesMut,
    head: usize,
    mut body: Body,
    from: &mut TcpStream,
    to: &mut TcpStream,
) -> Result<()> {
    let mut start = head;
    loop {
        let end = start + body.feed(&buffer[start..])?;
        to.write_all(&buffer[..end]).await?;
        buffer.advance(end);
        if body.done() {
            return Ok(());
        }
        start = 0;
        if from.read_buf(buffer).await? == 0 {
            bail!("the connection closed within a body");
        }
    }
}

/// Where a body ends.
enum Body {
    /// This many bytes are still to come.
    Length(usize),
    Chunked(Chunks),
}

impl Body {
    /// How many of `bytes` belong to the body (see [`Chunks::feed`]).
    fn feed(&mut self, bytes: &[u8]) -> Result<usize> {
        match self {
            Body::Length(left) => {
                let taken = (*left).min(bytes.len());
                *left -= taken;
                Ok(taken)
            }
            Body::Chunked(chunks) => chunks.feed(bytes),
        }
    }

    fn done(&self) -> bool {
        match self {
            Body::Length(left) => *left == 0,
            Body::Chunked(chunks) => chunks.done,
        }
    }
}

/// Where a chunked body ends, fed its bytes as they come (no trailers).
#[derive(Default)]
struct Chunks {
    /// Bytes of the current chunk (its data and CRLF) still to come.
    left: usize,
    /// The last chunk's size line was seen.
    last: bool,
    done: bool,
}

impl Chunks {
    /// How many of `bytes` belong to the body so far: all but a size line that is not
    /// complete yet, or what follows the body's end.
    fn feed(&mut self, bytes: &[u8]) -> Result<usize> {
        let mut at = 0;
        while at < bytes.len() && !self.done {
            if self.left > 0 {
                let taken = self.left.min(bytes.len() - at);
                at += taken;
                self.left -= taken;
                self.done = self.last && self.left == 0;
                continue;
            }
            let Some(line) = bytes[at..].windows(2).position(|pair| pair == b"\r\n") else {
                break;
            };
            let size = &bytes[at..at + line];
            let size = size.split(|b| *b == b';').next().unwrap_or(size);
            let size = usize::from_str_radix(std::str::from_utf8(size)?.trim(), 16)?;
            at += line + 2;
            self.last = size == 0;
            // The data and its CRLF; the last chunk has none, only the body's final CRLF.
            self.left = size + 2;
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::Chunks;

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_however_it_is_cut() {
        let body = b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\nNEXT";
        let end = body.len() - 4;
        for cut in 0..=body.len() {
            let mut chunks = Chunks::default();
            let first = chunks.feed(&body[..cut]).unwrap();
            assert!(first <= cut.min(end));
            let second = chunks.feed(&body[first..]).unwrap();
            assert_eq!(first + second, end, "cut at {cut}");
            assert!(chunks.done);
        }
    }
}
