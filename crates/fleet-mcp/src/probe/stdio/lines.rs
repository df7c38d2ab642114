//! stdio framing: one JSON-RPC message per line on the instance's own pipes.
//!
//! Ours rather than rmcp's `AsyncRwTransport` because a probe must *see* what that
//! transport forgives: rmcp silently skips lines that are not JSON, so a server that
//! logs to stdout would pass a probe and then corrupt a real client's stream. Here
//! every non-JSON line is recorded as [`Noise`], and the session reads raw replies with
//! ids of its own choosing. The reader answers the server's pings and drops its
//! notifications itself, so a chatty server is never blocked on a full pipe between
//! checks.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use tokio::io::AsyncWrite;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader,
};

/// The server's stdin: a child's pipe, or a virtual connection through a gateway link.
type Stdin = Box<dyn AsyncWrite + Send + Unpin>;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The longest line accepted from a server (rmcp's stdio limit too).
const MAX_LINE_BYTES: u64 = 16 * 1024 * 1024;
/// How much of a noise line is kept for the report.
const NOISE_SAMPLE_CHARS: usize = 160;

/// One line from the server's stdout.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A JSON object: a message, or something pretending to be one.
    Json(Value),
    /// Anything else (already recorded in [`Noise`]); the text is a bounded sample.
    Noise(String),
}

/// Non-protocol output seen on stdout over the session's life.
#[derive(Debug, Default)]
pub(crate) struct Noise {
    inner: Mutex<NoiseLog>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct NoiseLog {
    /// Noise lines seen so far.
    pub(crate) lines: u64,
    /// A sample of the latest noise line.
    pub(crate) latest: Option<String>,
}

impl Noise {
    fn record(&self, sample: &str) {
        let mut log = self.inner.lock();
        log.lines += 1;
        log.latest = Some(sample.to_owned());
    }

    pub(crate) fn snapshot(&self) -> NoiseLog {
        self.inner.lock().clone()
    }
}

/// A client transport over a child's stdin/stdout.
pub(crate) struct LineTransport {
    inbound: mpsc::Receiver<Inbound>,
    stdin: Arc<tokio::sync::Mutex<Option<Stdin>>>,
    noise: Arc<Noise>,
    /// Set once stdout has closed (or cannot be read).
    closed: Arc<AtomicBool>,
    reader: JoinHandle<()>,
}

impl std::fmt::Debug for LineTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineTransport")
            .field("noise", &self.noise)
            .finish_non_exhaustive()
    }
}

impl LineTransport {
    pub(crate) fn new(
        stdin: impl AsyncWrite + Send + Unpin + 'static,
        stdout: impl AsyncRead + Send + Unpin + 'static,
    ) -> Self {
        let (tx, inbound) = mpsc::channel(64);
        let noise = Arc::new(Noise::default());
        let closed = Arc::new(AtomicBool::new(false));
        let stdin: Arc<tokio::sync::Mutex<Option<Stdin>>> =
            Arc::new(tokio::sync::Mutex::new(Some(Box::new(stdin))));
        let reader = Reader {
            tx,
            noise: noise.clone(),
            stdin: stdin.clone(),
        };
        let reader = tokio::spawn({
            let closed = closed.clone();
            async move {
                reader.run(stdout).await;
                closed.store(true, Ordering::Relaxed);
            }
        });
        Self {
            inbound,
            stdin,
            noise,
            closed,
            reader,
        }
    }

    pub(crate) fn noise(&self) -> Arc<Noise> {
        self.noise.clone()
    }

    pub(crate) fn closed(&self) -> Arc<AtomicBool> {
        self.closed.clone()
    }

    /// Closes stdin — how a stdio client says goodbye; the server should exit — and stops
    /// reading.
    pub(crate) async fn close(self) {
        if let Some(mut stdin) = self.stdin.lock().await.take() {
            let _ = stdin.shutdown().await;
        }
    }

    /// The next line; `None` once stdout is closed.
    pub(crate) async fn next(&mut self) -> Option<Inbound> {
        self.inbound.recv().await
    }

    /// Writes one message as one line.
    ///
    /// # Errors
    ///
    /// The pipe's write error, or `NotConnected` after [`Transport::close`].
    pub(crate) async fn send_value(&self, message: &Value) -> std::io::Result<()> {
        send_json(&self.stdin, message).await
    }
}

impl Drop for LineTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Writes one message as one line.
async fn send_json(
    stdin: &tokio::sync::Mutex<Option<Stdin>>,
    message: &Value,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    let mut stdin = stdin.lock().await;
    let Some(pipe) = stdin.as_mut() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "stdin is closed",
        ));
    };
    pipe.write_all(&line).await?;
    pipe.flush().await
}

/// The task reading the server's stdout.
struct Reader {
    tx: mpsc::Sender<Inbound>,
    noise: Arc<Noise>,
    stdin: Arc<tokio::sync::Mutex<Option<Stdin>>>,
}

impl Reader {
    async fn run(self, stdout: impl AsyncRead + Unpin) {
        // Small: one per server in a fleet; a long answer only costs more reads.
        let mut reader = BufReader::with_capacity(2 * 1024, stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            let inbound = match read_bounded_line(&mut reader, &mut line).await {
                Ok(LineRead::Eof) => return,
                Ok(LineRead::TooLong) => {
                    Inbound::Noise(format!("a line longer than {MAX_LINE_BYTES} bytes"))
                }
                Ok(LineRead::Line) => match classify(&line) {
                    Some(inbound) => inbound,
                    None => continue,
                },
                Err(e) => {
                    tracing::debug!("reading the server's stdout failed: {e}");
                    return;
                }
            };
            if let Inbound::Noise(sample) = &inbound {
                self.noise.record(sample);
            }
            if let Inbound::Json(message) = &inbound
                && let Some(method) = message.get("method")
            {
                match message.get("id") {
                    // Nobody waits for a notification.
                    None => continue,
                    Some(id) if method == "ping" => {
                        let pong = json!({ "jsonrpc": "2.0", "id": id, "result": {} });
                        if let Err(e) = send_json(&self.stdin, &pong).await {
                            tracing::debug!("could not answer the server's ping: {e}");
                        }
                        continue;
                    }
                    Some(_) => {}
                }
            }
            if self.tx.send(inbound).await.is_err() {
                return;
            }
        }
    }
}

/// `None` for a blank line (tolerated: some servers end messages with `\r\n\r\n`).
fn classify(line: &[u8]) -> Option<Inbound> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice::<Value>(line) {
        Ok(value @ Value::Object(_)) => Some(Inbound::Json(value)),
        _ => {
            let text = String::from_utf8_lossy(line);
            let mut sample: String = text.chars().take(NOISE_SAMPLE_CHARS).collect();
            if sample.len() < text.len() {
                sample.push('…');
            }
            Some(Inbound::Noise(sample))
        }
    }
}

enum LineRead {
    Line,
    TooLong,
    Eof,
}

/// Reads one line without ever buffering more than [`MAX_LINE_BYTES`] of it.
async fn read_bounded_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> std::io::Result<LineRead> {
    let n = (&mut *reader)
        .take(MAX_LINE_BYTES + 1)
        .read_until(b'\n', line)
        .await?;
    if n == 0 {
        return Ok(LineRead::Eof);
    }
    if line.ends_with(b"\n") || (line.len() as u64) <= MAX_LINE_BYTES {
        // A complete line, or the last bytes before EOF.
        return Ok(LineRead::Line);
    }
    // Too long: drop the rest of it, in bounded pieces.
    loop {
        line.clear();
        let n = (&mut *reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', line)
            .await?;
        if n == 0 || line.ends_with(b"\n") {
            line.clear();
            return Ok(LineRead::TooLong);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_are_messages_and_the_rest_is_noise() {
        assert!(matches!(
            classify(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\r\n"),
            Some(Inbound::Json(_))
        ));
        assert!(matches!(
            classify(b"\xEF\xBB\xBF{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n"),
            Some(Inbound::Json(_))
        ));
        assert!(classify(b"  \r\n").is_none());
        for noise in [
            &b"Server started on stdio\n"[..],
            b"42\n",
            b"[1,2]\n",
            b"{oops\n",
        ] {
            assert!(
                matches!(classify(noise), Some(Inbound::Noise(_))),
                "{noise:?}"
            );
        }
        let long = format!("{}\n", "x".repeat(1000));
        let Some(Inbound::Noise(sample)) = classify(long.as_bytes()) else {
            panic!("expected noise");
        };
        assert_eq!(sample.chars().count(), NOISE_SAMPLE_CHARS + 1);
    }

    #[tokio::test]
    async fn lines_are_read_whole_and_the_last_one_may_lack_a_newline() {
        let input: &[u8] = b"{\"a\":1}\n{\"b\":2}";
        let mut reader = BufReader::new(input);
        let mut line = Vec::new();
        assert!(matches!(
            read_bounded_line(&mut reader, &mut line).await.unwrap(),
            LineRead::Line
        ));
        assert_eq!(line, b"{\"a\":1}\n");
        line.clear();
        assert!(matches!(
            read_bounded_line(&mut reader, &mut line).await.unwrap(),
            LineRead::Line
        ));
        assert_eq!(line, b"{\"b\":2}");
        line.clear();
        assert!(matches!(
            read_bounded_line(&mut reader, &mut line).await.unwrap(),
            LineRead::Eof
        ));
    }
}
