//! A connection from nginx, registered with the event loop for reading only.
//!
//! Why. tokio registers a socket for both directions, edge-triggered. On a
//! Unix socket the kernel reports "writable" again each time the peer reads
//! what was written to it (every buffer the peer consumes is released with a
//! write-space wake-up), so every answer nginx read woke the gateway's thread,
//! which found nothing to do and slept again: `perf` counted these as 61% of
//! the times the thread was woken under load, each a context switch on a CPU
//! nginx and the node share. TCP signals write space only after a writer
//! found its buffer full, so the node's side has no such wake-ups.
//!
//! Here the socket is registered for readability only, and a write goes
//! straight to it. Only a write that finds the socket's buffer full (a large
//! answer nginx has not read yet) registers a second descriptor of the same
//! socket for writability, and keeps it for the rest of the connection, which
//! then behaves as before.

use std::io::{self, IoSlice, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How much one read takes at most: a request head with a small body at
/// once; hyper reads a larger body in several.
const READ_CHUNK: usize = 8 << 10;

/// A connection from nginx for hyper (see the module's doc).
pub struct QuietSocket {
    reading: AsyncFd<UnixStream>,
    /// The same socket, registered for writability once a write found its
    /// buffer full.
    writing: Option<AsyncFd<UnixStream>>,
    /// What a read lands in before it is copied into hyper's buffer, which
    /// may be uninitialised memory (reading into it directly needs `unsafe`).
    chunk: Box<[u8]>,
}

impl QuietSocket {
    /// Takes the socket over from tokio's registration.
    pub fn new(stream: tokio::net::UnixStream) -> io::Result<QuietSocket> {
        // Non-blocking, as tokio left it.
        let stream = stream.into_std()?;
        Ok(QuietSocket {
            reading: register(stream, Interest::READABLE)?,
            writing: None,
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
        })
    }

    /// Writes with `write` (a non-blocking write to the socket); past a full
    /// buffer, waits for room on the writability registration.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        write: impl Fn(&UnixStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        if self.writing.is_none() {
            match write(self.reading.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let twin = self.reading.get_ref().try_clone()?;
                    self.writing = Some(register(twin, Interest::WRITABLE)?);
                }
                done => return Poll::Ready(done),
            }
        }
        let Some(writing) = &self.writing else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        loop {
            let mut ready = ready!(writing.poll_write_ready(cx))?;
            // Registered just now, it reports the room there already is.
            match ready.try_io(|fd| write(fd.get_ref())) {
                Ok(done) => return Poll::Ready(done),
                Err(_would_block) => continue,
            }
        }
    }
}

/// `stream` registered with the event loop for `interest` only.
// The one unsafe call of the gateway: tokio registers a descriptor only through it.
#[allow(unsafe_code)]
fn register(stream: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: the `UnixStream` owns its descriptor, which stays open and the
    // same for as long as the `AsyncFd` owns the stream: only its drop closes
    // it, and nothing here replaces it.
    Ok(unsafe { AsyncFd::register_with_interest(stream, interest) }?)
}

impl hyper::rt::Read for QuietSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let room = buf.remaining().min(this.chunk.len());
        if room == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let mut ready = ready!(this.reading.poll_read_ready(cx))?;
            // `room` is at most the chunk's length.
            let Some(chunk) = this.chunk.get_mut(..room) else {
                return Poll::Ready(Ok(()));
            };
            match ready.try_io(|fd| fd.get_ref().read(chunk)) {
                Ok(Ok(n)) => {
                    if n < room {
                        // Drained: the next read waits for the next edge, with
                        // no read that would only say "nothing yet".
                        ready.clear_ready();
                    }
                    // A read fills at most the slice it was given.
                    buf.put_slice(this.chunk.get(..n).unwrap_or_default());
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl hyper::rt::Write for QuietSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_with(cx, |mut fd| fd.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |mut fd| fd.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(
            match self.reading.get_ref().shutdown(std::net::Shutdown::Write) {
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
                done => done,
            },
        )
    }
}
