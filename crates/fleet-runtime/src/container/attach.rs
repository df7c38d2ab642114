//! One run's streams: the engine's attach connection split into the stdio attachment (the
//! protocol) and the instance's log (everything else).
//!
//! The engine multiplexes stdout and stderr on one connection (no TTY, so each frame says
//! which it is). A demultiplexer task sends stdout frames to the [`StdioAttachment`]'s
//! reader for a stdio instance and to the log otherwise, and stderr always to the log. For
//! a stdio instance a second task copies the attachment's writer to the container's stdin
//! and half-closes the connection when the writer is dropped: the engine then closes the
//! container's stdin, which asks a stdio server to exit.

use crate::instance::StdioAttachment;
use crate::process::logs::{LogWriter, spawn_line_copier};
use bollard::container::LogOutput;
use bollard::query_parameters::AttachContainerOptions;
use futures::StreamExt as _;
use std::time::Duration;
use tokio::io::{AsyncWriteExt as _, duplex};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

/// Buffer between the demultiplexer and a reader (the attachment, a log copier), and
/// between the attachment's writer and the container's stdin. Each pipe is a duplex used
/// one way: dropping one end is EOF (or a broken pipe) at the other, which a split simplex
/// would not give.
const PIPE_BUFFER: usize = 64 * 1024;

/// How long the output gets to reach the log after the container exited: the engine ends
/// the attach stream once it has passed on everything the container wrote, which a busy
/// machine may take a moment to do.
const OUTPUT_WAIT: Duration = Duration::from_secs(5);

/// The streams of one run of a container.
#[derive(Debug)]
pub(crate) struct Attached {
    /// For a stdio instance: what the caller talks over.
    pub(crate) stdio: Option<StdioAttachment>,
    pub(crate) tasks: StreamTasks,
}

/// The tasks moving one run's bytes.
#[derive(Debug)]
pub(crate) struct StreamTasks {
    /// The demultiplexer and the log copiers: they end with the attach stream.
    output: Vec<JoinHandle<()>>,
    /// Copies the attachment's writer to the container's stdin; it would wait for the
    /// caller to drop the writer, which a caller holding on to an exited run never does.
    stdin: Option<JoinHandle<()>>,
    /// Tells the stdin copier to close the container's stdin now.
    close_stdin: Option<oneshot::Sender<()>>,
}

impl StreamTasks {
    /// Closes the container's stdin (as if the caller had dropped the attachment's writer):
    /// what asks a stdio server to exit. Anything written after it is lost.
    pub(crate) fn close_stdin(&mut self) {
        if let Some(close) = self.close_stdin.take() {
            let _ = close.send(());
        }
    }

    /// After the container exited: every line it printed reaches the log (briefly waited
    /// for), and writes to the old attachment fail from now on.
    pub(crate) async fn finish(self) {
        if let Some(stdin) = self.stdin {
            stdin.abort();
        }
        let deadline = Instant::now() + OUTPUT_WAIT;
        for mut task in self.output {
            if timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// The run never started: nothing to wait for.
    pub(crate) fn abort(self) {
        self.output
            .iter()
            .chain(&self.stdin)
            .for_each(|t| t.abort());
    }
}

/// Attaches to container `id` (before it starts, so no output is missed).
pub(crate) async fn attach(
    docker: &bollard::Docker,
    id: &str,
    stdio: bool,
    log: &LogWriter,
    max_line: usize,
) -> Result<Attached, bollard::errors::Error> {
    let options = AttachContainerOptions {
        stdin: stdio,
        stdout: true,
        stderr: true,
        stream: true,
        logs: false,
        detach_keys: None,
    };
    let connection = docker.attach_container(id, Some(options)).await?;
    let mut output = connection.output;
    let mut tasks = Vec::new();
    let mut stdin_pump = None;
    let mut close_stdin = None;

    let (stderr_reader, mut stderr) = duplex(PIPE_BUFFER);
    tasks.push(spawn_line_copier(stderr_reader, log.clone(), max_line));
    let (stdout_reader, mut stdout) = duplex(PIPE_BUFFER);
    let attachment = if stdio {
        let (stdin_reader, stdin_writer) = duplex(PIPE_BUFFER);
        let mut input = connection.input;
        let (close, closed) = oneshot::channel::<()>();
        close_stdin = Some(close);
        stdin_pump = Some(tokio::spawn(async move {
            let mut stdin_reader = stdin_reader;
            // Until the caller drops the writer (EOF), the container is gone (an error), or
            // the runtime closes stdin (a stop).
            tokio::select! {
                _ = tokio::io::copy(&mut stdin_reader, &mut input) => {}
                _ = closed => {}
            }
            // A half-close: the engine closes the container's stdin, the output goes on.
            let _ = input.shutdown().await;
        }));
        Some(StdioAttachment::new(stdin_writer, stdout_reader))
    } else {
        tasks.push(spawn_line_copier(stdout_reader, log.clone(), max_line));
        None
    };
    tasks.push(tokio::spawn(async move {
        let mut stdout_open = true;
        while let Some(Ok(frame)) = output.next().await {
            match frame {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    // A caller that dropped the attachment no longer reads the protocol;
                    // keep draining so stderr still reaches the log.
                    if stdout_open && stdout.write_all(&message).await.is_err() {
                        stdout_open = false;
                    }
                }
                LogOutput::StdErr { message } => {
                    let _ = stderr.write_all(&message).await;
                }
                LogOutput::StdIn { .. } => {}
            }
        }
        // Dropping the writers is EOF for the attachment and the log copiers.
    }));
    Ok(Attached {
        stdio: attachment,
        tasks: StreamTasks {
            output: tasks,
            stdin: stdin_pump,
            close_stdin,
        },
    })
}
