//! Instance log files: size-capped, rotated, followable. The format is described on
//! [`LogRotation`].

use crate::instance::InstanceId;
use futures::Stream;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Size cap and retention of instance log files.
///
/// One file per instance, `STATE/logs/<id>.log` ([`log_path`]), shared by all its
/// restarts. Lines are raw, as the process printed them (stdout — unless it is the stdio
/// protocol — and stderr, interleaved line by line, never mid-line), plus marker lines
/// starting with `--- `: `--- started pid N at TIME`, `--- exited code N after 1.500s at
/// TIME` (or `signal 9 (SIGKILL)`), `--- spawn failed: …`, `--- crash-looping: …`. A line
/// longer than 64 KiB (or `max_bytes`) is cut into several.
///
/// A write that would take the file past `max_bytes` rotates first: `.log.2` → `.log.3`,
/// `.log.1` → `.log.2`, `.log` → `.log.1` ([`rotated_log_path`]), and a fresh `.log`
/// begins; the oldest beyond `keep` is dropped. An instance uses at most
/// `(keep + 1) × max_bytes` of disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    /// Largest size of one file, in bytes (at least 256).
    pub max_bytes: u64,
    /// Rotated files kept besides the live one (`.1` … `.keep`); 0 keeps none.
    pub keep: usize,
}

impl Default for LogRotation {
    /// 5 MiB per file, 3 rotated files kept.
    fn default() -> Self {
        LogRotation {
            max_bytes: 5 * 1024 * 1024,
            keep: 3,
        }
    }
}

impl LogRotation {
    fn max_bytes(&self) -> u64 {
        self.max_bytes.max(256)
    }

    /// The longest line written as one; longer output is cut.
    pub(crate) fn max_line(&self) -> usize {
        usize::try_from(self.max_bytes()).map_or(MAX_LINE, |cap| cap.min(MAX_LINE))
    }
}

const MAX_LINE: usize = 64 * 1024;

/// The live log file of instance `id` under `state_dir`.
pub fn log_path(state_dir: &Path, id: &InstanceId) -> PathBuf {
    state_dir.join("logs").join(format!("{id}.log"))
}

/// `<path>.<n>`: the n-th most recent rotated file.
pub fn rotated_log_path(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Buffer sizes of the per-process log path. Small on purpose: a fleet of a thousand
/// servers runs two thousand processes, each with a stderr reader and a log writer, and
/// stderr is low-volume — a longer line only costs another read or write call.
const LOG_WRITE_BUFFER: usize = 2 * 1024;
const LOG_READ_BUFFER: usize = 2 * 1024;

/// A log file that rotates itself. Synchronous: the async side batches lines and writes
/// them on a blocking thread.
#[derive(Debug)]
pub(crate) struct RotatingLog {
    path: PathBuf,
    rotation: LogRotation,
    file: BufWriter<File>,
    size: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl RotatingLog {
    /// Opens (appending) or creates the log file and its directory.
    pub(crate) fn open(path: PathBuf, rotation: LogRotation) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path,
            rotation,
            file: BufWriter::with_capacity(LOG_WRITE_BUFFER, file),
            size,
        })
    }

    /// Writes one line (which ends with `\n`), rotating first if it would not fit.
    pub(crate) fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let max = self.rotation.max_bytes();
        let line = &line[..line.len().min(usize::try_from(max).unwrap_or(usize::MAX))];
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > max {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += len;
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let keep = self.rotation.keep;
        if keep == 0 {
            remove_if_exists(&self.path)?;
        } else {
            for n in (1..keep).rev() {
                rename_if_exists(
                    &rotated_log_path(&self.path, n),
                    &rotated_log_path(&self.path, n + 1),
                )?;
            }
            rename_if_exists(&self.path, &rotated_log_path(&self.path, 1))?;
        }
        self.file = BufWriter::with_capacity(LOG_WRITE_BUFFER, open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Opens (or creates) instance `id`'s log under `state_dir` and starts the task that
/// writes it.
pub(crate) async fn open_instance_log(
    state_dir: &Path,
    id: &InstanceId,
    rotation: LogRotation,
) -> Result<(LogWriter, JoinHandle<()>), crate::StartError> {
    let path = log_path(state_dir, id);
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || RotatingLog::open(path, rotation))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)))
    };
    let log = opened.map_err(|source| crate::StartError::StateDir { path, source })?;
    Ok(spawn_log_task(log))
}

/// Deletes instance `id`'s log files under `state_dir`, the live one and those rotated
/// out; missing ones are fine.
pub(crate) async fn discard_instance_logs(state_dir: &Path, id: &InstanceId, keep: usize) {
    let live = log_path(state_dir, id);
    let removed = tokio::task::spawn_blocking(move || {
        let files =
            std::iter::once(live.clone()).chain((1..=keep).map(|n| rotated_log_path(&live, n)));
        for file in files {
            match fs::remove_file(&file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(file = %file.display(), error = %e, "cannot remove a log");
                }
                _ => {}
            }
        }
    });
    let _ = removed.await;
}

/// Sends complete lines to an instance's log task. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct LogWriter {
    tx: mpsc::Sender<Entry>,
}

enum Entry {
    Line(Vec<u8>),
    /// Answered once every entry queued before it is written and flushed.
    Synced(oneshot::Sender<()>),
}

impl LogWriter {
    /// Queues a line (a trailing `\n` is added if missing). Waits when the log task is behind,
    /// which in turn makes a chatty process wait on its pipe rather than grow our memory.
    pub(crate) async fn line(&self, mut line: Vec<u8>) {
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        // If the log task is gone the line is lost; the process must not notice.
        let _ = self.tx.send(Entry::Line(line)).await;
    }

    /// Waits until every line queued so far is on disk (or the log task is gone), so that
    /// whoever hears of an event next can read its marker in the log.
    pub(crate) async fn synced(&self) {
        let (done, written) = oneshot::channel();
        if self.tx.send(Entry::Synced(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// Starts the task that owns an instance's log file. It ends when every [`LogWriter`] is gone.
pub(crate) fn spawn_log_task(log: RotatingLog) -> (LogWriter, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Entry>(1024);
    let task = tokio::spawn(async move {
        let mut log = Some(log);
        let mut batch = Vec::new();
        let mut warned = false;
        while rx.recv_many(&mut batch, 512).await > 0 {
            let Some(mut file) = log.take() else { break };
            let mut lines = Vec::with_capacity(batch.len());
            let mut waiting = Vec::new();
            for entry in batch.drain(..) {
                match entry {
                    Entry::Line(line) => lines.push(line),
                    Entry::Synced(done) => waiting.push(done),
                }
            }
            let written = tokio::task::spawn_blocking(move || {
                let result = lines
                    .iter()
                    .try_for_each(|line| file.write_line(line))
                    .and_then(|()| file.flush());
                (file, result)
            })
            .await;
            for done in waiting {
                let _ = done.send(());
            }
            match written {
                Ok((file, result)) => {
                    if let Err(e) = result
                        && !warned
                    {
                        tracing::warn!(path = %file.path.display(), error = %e, "cannot write instance log; lines are being lost");
                        warned = true;
                    }
                    log = Some(file);
                }
                Err(_) => break,
            }
        }
        // Keep draining so writers never block on a dead log task.
        while rx.recv().await.is_some() {}
    });
    (LogWriter { tx }, task)
}

/// Copies `reader` to the log line by line until EOF. Lines longer than `max_line` are cut.
pub(crate) fn spawn_line_copier<R>(reader: R, log: LogWriter, max_line: usize) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(LOG_READ_BUFFER, reader);
        let limit = max_line.saturating_sub(1).max(1);
        let mut line = Vec::new();
        loop {
            let buf = match reader.fill_buf().await {
                Ok([]) | Err(_) => break,
                Ok(buf) => buf,
            };
            let window = &buf[..buf.len().min(limit - line.len())];
            let (take, complete) = match window.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (window.len(), line.len() + window.len() >= limit),
            };
            line.extend_from_slice(&window[..take]);
            reader.consume(take);
            if complete {
                log.line(std::mem::take(&mut line)).await;
            }
        }
        if !line.is_empty() {
            log.line(line).await;
        }
    })
}

/// How often a follower looks for new lines and rotation.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The lines of a log file, like `tail -n N` or, with `follow`, `tail -F`.
///
/// First the last `from_end_lines` lines (reaching into `<path>.1` when the live file has
/// fewer); then, with `follow`, every new line as it is written, across rotations, forever
/// — a file that does not exist yet is waited for. Lines come without their `\n`, invalid
/// UTF-8 replaced. A file that cannot be read yields one `--- cannot read log …` line and
/// ends the stream. Dropping the stream stops the reading.
///
/// Must be called within a tokio runtime (the reading runs on a task of its own).
pub fn follow_log(
    path: impl Into<PathBuf>,
    from_end_lines: usize,
    follow: bool,
) -> impl Stream<Item = String> + Send + Unpin + 'static {
    let path = path.into();
    let (tx, mut rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut follower = Follower::new(path.clone());
        let tail = match follower.tail(from_end_lines).await {
            Ok(tail) => tail,
            Err(e) => {
                let _ = tx
                    .send(format!("--- cannot read log {}: {e}", path.display()))
                    .await;
                return;
            }
        };
        for line in tail {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if follow {
            follower.run(tx).await;
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn split_lines(bytes: &[u8]) -> Vec<String> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .filter(|line| line.ends_with(b"\n"))
        .map(line_text)
        .collect()
}

fn line_text(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

struct Follower {
    path: PathBuf,
    file: Option<(tokio::fs::File, u64)>,
    position: u64,
    partial: Vec<u8>,
}

impl Follower {
    fn new(path: PathBuf) -> Self {
        Follower {
            path,
            file: None,
            position: 0,
            partial: Vec::new(),
        }
    }

    /// Opens the live file from its start; `Ok(false)` if it does not exist yet.
    async fn open(&mut self) -> io::Result<bool> {
        match tokio::fs::File::open(&self.path).await {
            Ok(file) => {
                let inode = file.metadata().await?.ino();
                self.file = Some((file, inode));
                self.position = 0;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Opens the live file and returns its last `n` complete lines, topped up from
    /// `<path>.1` when it has fewer; reading goes on from there.
    async fn tail(&mut self, n: usize) -> io::Result<Vec<String>> {
        let mut tail = Vec::new();
        if self.open().await? {
            self.read_new(&mut tail).await?;
            tail.drain(..tail.len().saturating_sub(n));
        }
        if tail.len() < n {
            let older = tokio::fs::read(rotated_log_path(&self.path, 1))
                .await
                .unwrap_or_default();
            let mut older = split_lines(&older);
            older.drain(..older.len().saturating_sub(n - tail.len()));
            older.append(&mut tail);
            tail = older;
        }
        Ok(tail)
    }

    /// Reads to the current end of the open file, appending complete lines to `out`.
    async fn read_new(&mut self, out: &mut Vec<String>) -> io::Result<()> {
        let Some((file, _)) = self.file.as_mut() else {
            return Ok(());
        };
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            self.position += n as u64;
            self.partial.extend_from_slice(&buf[..n]);
            if let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') {
                let rest = self.partial.split_off(end + 1);
                out.extend(split_lines(&self.partial));
                self.partial = rest;
            }
        }
    }

    async fn run(mut self, tx: mpsc::Sender<String>) {
        let mut lines = Vec::new();
        loop {
            if self.file.is_none()
                && let Err(e) = self.open().await
            {
                tracing::debug!(path = %self.path.display(), error = %e, "log not readable yet");
            }
            let mut switch = false;
            if let Err(e) = self.read_new(&mut lines).await {
                tracing::debug!(path = %self.path.display(), error = %e, "log read failed; reopening");
                switch = true;
            }
            if let Some((file, inode)) = self.file.as_mut() {
                match tokio::fs::metadata(&self.path).await {
                    // Rotated: everything written to the old file before the rename has just
                    // been read, so move on to the new one.
                    Ok(meta) if meta.ino() != *inode => switch = true,
                    // Truncated in place: start again from the top.
                    Ok(meta)
                        if meta.len() < self.position
                            && file.seek(io::SeekFrom::Start(0)).await.is_ok() =>
                    {
                        self.position = 0;
                        self.partial.clear();
                    }
                    _ => {}
                }
            }
            if switch {
                // A last read of the old file catches lines written between the read above
                // and the rename.
                let _ = self.read_new(&mut lines).await;
                if !self.partial.is_empty() {
                    lines.push(line_text(&std::mem::take(&mut self.partial)));
                }
                self.file = None;
            }
            for line in lines.drain(..) {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_caps_every_file_and_keeps_the_newest() {
        let dir = std::env::temp_dir().join(format!("fleet-runtime-rot-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("x.log");
        let rotation = LogRotation {
            max_bytes: 1000,
            keep: 2,
        };
        let mut log = RotatingLog::open(path.clone(), rotation).unwrap();
        for i in 0..100 {
            log.write_line(format!("line {i:04} {}\n", "x".repeat(80)).as_bytes())
                .unwrap();
        }
        log.flush().unwrap();
        for p in [
            path.clone(),
            rotated_log_path(&path, 1),
            rotated_log_path(&path, 2),
        ] {
            let len = fs::metadata(&p).unwrap().len();
            assert!(len > 0 && len <= 1000, "{}: {len}", p.display());
        }
        assert!(!rotated_log_path(&path, 3).exists());
        let live = fs::read_to_string(&path).unwrap();
        assert!(live.ends_with(&format!("line 0099 {}\n", "x".repeat(80))));
        let older = fs::read_to_string(rotated_log_path(&path, 1)).unwrap();
        let first_live = live.lines().next().unwrap();
        let last_older = older.lines().last().unwrap();
        assert!(last_older < first_live, "{last_older} / {first_live}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn splits_complete_lines_only() {
        assert_eq!(split_lines(b"a\nb\r\nc"), ["a", "b"]);
        assert_eq!(split_lines(b""), Vec::<String>::new());
    }
}
