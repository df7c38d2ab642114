//! The protocol pipes of a stdio instance, handed to the caller.
//!
//! `stdin` is a wrapper rather than a bare `ChildStdin` because a graceful stop begins by
//! closing it (stdio MCP servers exit on EOF), and the runtime must be able to do that while
//! the caller still holds the handle.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::process::{ChildStdin, ChildStdout};

/// stdin and stdout of a [`InstanceIo::Stdio`](crate::InstanceIo::Stdio) instance.
#[derive(Debug)]
pub struct StdioPipes {
    pub stdin: InstanceStdin,
    pub stdout: InstanceStdout,
}

/// The write end of an instance's stdin. Writes fail with `BrokenPipe` once the runtime has
/// closed it (the instance is stopping) or the process is gone; `shutdown` closes it.
pub struct InstanceStdin {
    slot: Arc<Mutex<StdinSlot>>,
}

/// The read end of an instance's stdout; EOF when the process is gone.
pub struct InstanceStdout {
    inner: ChildStdout,
}

#[derive(Default)]
struct StdinSlot {
    stdin: Option<ChildStdin>,
    /// The task waiting for the pipe to accept data, woken when the runtime closes it.
    waker: Option<Waker>,
}

/// The runtime's handle for closing an instance's stdin.
pub(crate) struct StdinCloser {
    slot: Arc<Mutex<StdinSlot>>,
}

pub(crate) fn stdio_pipes(stdin: ChildStdin, stdout: ChildStdout) -> (StdioPipes, StdinCloser) {
    let slot = Arc::new(Mutex::new(StdinSlot {
        stdin: Some(stdin),
        waker: None,
    }));
    let pipes = StdioPipes {
        stdin: InstanceStdin { slot: slot.clone() },
        stdout: InstanceStdout { inner: stdout },
    };
    (pipes, StdinCloser { slot })
}

fn lock(slot: &Mutex<StdinSlot>) -> MutexGuard<'_, StdinSlot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StdinCloser {
    /// Closes the pipe so the process reads EOF.
    pub(crate) fn close(&self) {
        let (stdin, waker) = {
            let mut slot = lock(&self.slot);
            (slot.stdin.take(), slot.waker.take())
        };
        drop(stdin);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the instance's stdin is closed (the instance is stopping or gone)",
    )
}

impl InstanceStdin {
    fn poll_with<T>(
        &self,
        cx: &mut Context<'_>,
        f: impl FnOnce(Pin<&mut ChildStdin>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let mut slot = lock(&self.slot);
        let Some(stdin) = slot.stdin.as_mut() else {
            return Poll::Ready(Err(closed()));
        };
        let poll = f(Pin::new(stdin), cx);
        if poll.is_pending() {
            slot.waker = Some(cx.waker().clone());
        }
        poll
    }
}

impl AsyncWrite for InstanceStdin {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_with(cx, |stdin, cx| stdin.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_with(cx, |stdin, cx| stdin.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        drop(lock(&self.slot).stdin.take());
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for InstanceStdout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl fmt::Debug for InstanceStdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = lock(&self.slot).stdin.is_some();
        f.debug_struct("InstanceStdin")
            .field("open", &open)
            .finish()
    }
}

impl fmt::Debug for InstanceStdout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceStdout").finish_non_exhaustive()
    }
}

impl fmt::Debug for StdinCloser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StdinCloser").finish_non_exhaustive()
    }
}
