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

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Headers a head may have, at most.
const MAX_HEADERS: usize = 64;

/// Serves until its stdin closes.
pub(crate) async fn serve(upstream: &str) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    let upstream = upstream.to_owned();
    let accept = async move {
        loop {
            let (client, _) = listener.accept().await?;
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Err(error) = relay(client, &upstream).await {
                    eprintln!("raw HTTP relay: {error:#}");
                }
            });
        }
    };
    crate::bench_gateway::until_stdin_closes(accept).await
}

/// One client connection's exchanges, in order, over one upstream connection.
async fn relay(mut client: TcpStream, upstream: &str) -> Result<()> {
    let mut server = TcpStream::connect(upstream)
        .await
        .with_context(|| format!("connect to {upstream}"))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let mut from_client = BytesMut::with_capacity(16 * 1024);
    let mut from_server = BytesMut::with_capacity(16 * 1024);
    loop {
        let Some(request) = head(&mut from_client, &mut client, request_framing).await? else {
            return Ok(());
        };
        let Framing::Length(body) = request.framing else {
            bail!("a request body without Content-Length");
        };
        pass(
            &mut from_client,
            request.length + body,
            &mut client,
            &mut server,
        )
        .await?;
        let Some(response) = head(&mut from_server, &mut server, response_framing).await? else {
            bail!("the upstream closed before answering");
        };
        match response.framing {
            Framing::Length(body) => {
                pass(
                    &mut from_server,
                    response.length + body,
                    &mut server,
                    &mut client,
                )
                .await?;
            }
            Framing::Chunked => {
                pass_chunked(&mut from_server, response.length, &mut server, &mut client).await?;
            }
            Framing::UntilClose => {
                client.write_all(&from_server).await?;
                tokio::io::copy(&mut server, &mut client).await?;
                return Ok(());
            }
        }
    }
}

/// Where a message's body ends.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// A parsed head: its length in bytes and its body's framing.
struct Head {
    length: usize,
    framing: Framing,
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

fn request_framing(bytes: &[u8]) -> Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(length) = request.parse(bytes)? else {
        return Ok(None);
    };
    let framing = framing(request.headers)?.unwrap_or(Framing::Length(0));
    Ok(Some(Head { length, framing }))
}

fn response_framing(bytes: &[u8]) -> Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(length) = response.parse(bytes)? else {
        return Ok(None);
    };
    let framing = match response.code {
        Some(100..=199 | 204 | 304) => Framing::Length(0),
        _ => framing(response.headers)?.unwrap_or(Framing::UntilClose),
    };
    Ok(Some(Head { length, framing }))
}

/// The framing the headers give, if any.
fn framing(headers: &[httparse::Header<'_>]) -> Result<Option<Framing>> {
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Ok(Some(Framing::Chunked));
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(header.value)?.trim().parse()?;
            return Ok(Some(Framing::Length(length)));
        }
    }
    Ok(None)
}

/// Writes the first `length` bytes of the message in `buffer` to `to`, reading the rest
/// from `from` as it comes.
async fn pass(
    buffer: &mut BytesMut,
    mut length: usize,
    from: &mut TcpStream,
    to: &mut TcpStream,
) -> Result<()> {
    loop {
        let ready = length.min(buffer.len());
        to.write_all(&buffer[..ready]).await?;
        buffer.advance(ready);
        length -= ready;
        if length == 0 {
            return Ok(());
        }
        if from.read_buf(buffer).await? == 0 {
            bail!("the connection closed within a body");
        }
    }
}

/// [`pass`] for a chunked body after a head of `head` bytes: everything up to its last
/// chunk's end.
async fn pass_chunked(
    buffer: &mut BytesMut,
    head: usize,
    from: &mut TcpStream,
    to: &mut TcpStream,
) -> Result<()> {
    let mut chunks = Chunks::default();
    let mut start = head;
    loop {
        let end = start + chunks.feed(&buffer[start..])?;
        to.write_all(&buffer[..end]).await?;
        buffer.advance(end);
        if chunks.done {
            return Ok(());
        }
        start = 0;
        if from.read_buf(buffer).await? == 0 {
            bail!("the connection closed within a chunked body");
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
