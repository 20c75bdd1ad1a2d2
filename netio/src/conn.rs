//! One TCP connection, plain or TLS, with deadline-bound reads and writes that are safe under
//! io_uring.
//!
//! TLS is driven here directly over rustls's sans-IO [`rustls::Connection`] rather than through
//! an adapter crate, for two reasons:
//! - **Cancellation.** A dropped io_uring read may still complete in the kernel and its bytes
//!   are lost. Every read here is a `cancelable_read` raced against its deadline; on timeout
//!   the read is cancelled *and awaited*, so no byte is ever silently dropped. (A timed-out
//!   connection is closed by the caller anyway, but the rule holds for every read.)
//! - **Buffers.** Ciphertext goes through two small buffers owned here, plaintext straight into
//!   the caller's frame buffer, so a connection's memory is what we decide it is.
//!
//! What this module does not do: framing, HL7, retries. Those belong to the programs that
//! drive a connection.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller};
use monoio::net::TcpStream;
use monoio::time::Sleep;

/// Bytes of ciphertext read from the socket at a time. One TLS record is at most ~16.6 KiB;
/// reading up to that much keeps a full record to one syscall without idle connections
/// holding much.
const TLS_READ_CHUNK: usize = 17 * 1024;

/// A cancellation that more than one owner may fire (a read's own deadline, the worker's
/// shutdown): it cancels the io_uring operations started with its handle and wakes a task
/// waiting on [`CancelSignal::fired`]. monoio's `Canceller` is consumed by `cancel`, hence the
/// slot: whoever fires first takes it.
#[derive(Default)]
pub struct CancelSignal {
    canceller: RefCell<Option<Canceller>>,
    fired: Cell<bool>,
    waiter: RefCell<Option<Waker>>,
}

impl std::fmt::Debug for CancelSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelSignal")
            .field("fired", &self.fired.get())
            .finish_non_exhaustive()
    }
}

impl CancelSignal {
    /// Whether the signal has fired.
    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Completes once the signal has fired.
    pub async fn fired(&self) {
        poll_fn(|cx| {
            if self.fired.get() {
                Poll::Ready(())
            } else {
                *self.waiter.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

/// A [`CancelSignal`] shared by its owners.
pub type SharedCanceller = Rc<CancelSignal>;

/// A fresh [`SharedCanceller`].
pub fn shared_canceller() -> SharedCanceller {
    Rc::new(CancelSignal {
        canceller: RefCell::new(Some(Canceller::new())),
        ..CancelSignal::default()
    })
}

/// Fires `signal`: cancels its operations and wakes its waiter (idempotent).
pub fn fire(signal: &SharedCanceller) {
    signal.fired.set(true);
    if let Some(c) = signal.canceller.borrow_mut().take() {
        let _ = c.cancel();
    }
    if let Some(waker) = signal.waiter.borrow_mut().take() {
        waker.wake();
    }
}

/// How the bytes of a connection are carried.
enum Transport {
    Plain {
        /// The bytes of the write in progress, kept between writes so that writing allocates
        /// nothing once the buffer has grown to the usual message size.
        outgoing: Vec<u8>,
    },
    Tls {
        session: Box<rustls::Connection>,
        /// Ciphertext read from the socket; `incoming[fed..]` is not yet fed to rustls.
        /// Invariant: `fed <= incoming.len()`.
        incoming: Vec<u8>,
        fed: usize,
        /// Ciphertext produced by rustls, written to the socket before the next read.
        outgoing: Vec<u8>,
        /// The plaintext of the write in progress, joined (see [`Conn::write_all`]).
        joined: Vec<u8>,
    },
}

/// Plaintext bytes in one TLS record at most (TLS 1.2 and 1.3).
const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;

/// A connection with deadline-bound I/O; see the module docs.
pub struct Conn {
    tcp: TcpStream,
    transport: Transport,
    peer: SocketAddr,
    /// The cancel signal of writes, and of reads the caller gives none: kept from one
    /// operation to the next while it has not fired (a timeout fires it), so that reading and
    /// writing allocate nothing.
    own_cancel: SharedCanceller,
    /// The deadline timer, made on first use and re-armed for every read and write. Moving a
    /// registered timer to a later deadline costs next to nothing, while a fresh timer per
    /// operation set up, registered and removed a 512-byte entry each time (and its 128-byte
    /// alignment padded every future that held one).
    timer: Option<Pin<Box<Sleep>>>,
}

/// Why a read or write did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The deadline passed first.
    #[error("timed out")]
    TimedOut,
    /// The peer closed the connection (at a TLS level with close_notify, or at TCP level).
    #[error("connection closed by peer")]
    Closed,
    /// The read was cancelled from outside (shutdown).
    #[error("cancelled")]
    Cancelled,
    /// A socket error.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The TLS layer refused the peer (bad certificate, protocol violation, plaintext on a
    /// TLS port); rustls has queued the alert, which was sent before returning.
    #[error("TLS: {0}")]
    Tls(rustls::Error),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .field("tls", &self.is_tls())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// A plain connection.
    pub fn plain(tcp: TcpStream, peer: SocketAddr) -> Self {
        Self {
            own_cancel: shared_canceller(),
            timer: None,
            tcp,
            transport: Transport::Plain {
                outgoing: Vec::new(),
            },
            peer,
        }
    }

    /// A TLS connection whose handshake has not run yet; [`handshake`](Self::handshake) runs
    /// it.
    pub fn tls(tcp: TcpStream, peer: SocketAddr, session: rustls::Connection) -> Self {
        let transport = Transport::Tls {
            session: Box::new(session),
            incoming: Vec::new(),
            fed: 0,
            outgoing: Vec::new(),
            joined: Vec::new(),
        };
        Self {
            own_cancel: shared_canceller(),
            timer: None,
            tcp,
            transport,
            peer,
        }
    }

    /// The underlying socket (for non-blocking probes; all I/O goes through this type).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The remote address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls { .. })
    }

    /// The TLS version negotiated (`TLSv1.3`, `TLSv1.2`), once the handshake is done; `None`
    /// on a plain connection.
    pub fn tls_version(&self) -> Option<&'static str> {
        match &self.transport {
            Transport::Tls { session, .. } => session.protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
                _ => "other",
            }),
            Transport::Plain { .. } => None,
        }
    }

    /// The end-entity certificate the peer presented in the TLS handshake (DER), if any: none
    /// on a plain connection, before the handshake, or when client authentication is off.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        match &self.transport {
            Transport::Tls { session, .. } => session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| cert.as_ref()),
            Transport::Plain { .. } => None,
        }
    }

    /// Runs the TLS handshake to completion (no-op for plain connections). A refused peer
    /// gets its alert before this returns the error.
    ///
    /// # Errors
    /// [`ConnError::Closed`] only when the peer hung up before sending a single byte (a
    /// health check or a port probe); a peer that hangs up once the handshake has begun is
    /// an [`io::ErrorKind::UnexpectedEof`] error.
    pub async fn handshake(&mut self, deadline: Instant) -> Result<(), ConnError> {
        let mut heard_from_peer = false;
        loop {
            let Transport::Tls { session, .. } = &self.transport else {
                return Ok(());
            };
            if !session.is_handshaking() {
                return self.flush_tls(deadline).await;
            }
            self.flush_tls(deadline).await?;
            match self.pump_ciphertext(deadline, None).await {
                Ok(()) => heard_from_peer = true,
                Err(ConnError::Closed) if heard_from_peer => {
                    return Err(ConnError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection in the middle of the TLS handshake",
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends plaintext to `buf`, waiting until at least one byte arrives or `deadline`
    /// passes. `buf` is taken and given back (io_uring owns it while the kernel reads);
    /// `want` is how much spare room to read into.
    pub async fn read_into(
        &mut self,
        mut buf: Vec<u8>,
        want: usize,
        deadline: Instant,
        canceller: Option<&SharedCanceller>,
    ) -> (Result<usize, ConnError>, Vec<u8>) {
        if matches!(self.transport, Transport::Plain { .. }) {
            buf.reserve(want);
            let start = buf.len();
            let end = buf.capacity();
            let (result, slice) = read_deadline(
                &mut self.tcp,
                buf.slice_mut(start..end),
                arm(&mut self.timer, deadline),
                canceller.unwrap_or(&self.own_cancel),
            )
            .await;
            self.renew_own_cancel();
            let buf = slice.into_inner();
            return match result {
                Ok(0) => (Err(ConnError::Closed), buf),
                Ok(n) => (Ok(n), buf),
                Err(e) => (Err(e), buf),
            };
        }
        loop {
            let Transport::Tls { session, .. } = &mut self.transport else {
                unreachable!("checked above");
            };
            let before = buf.len();
            match take_plaintext(session, &mut buf) {
                // A clean TLS close (close_notify) after everything was read.
                Ok(()) if buf.len() == before => return (Err(ConnError::Closed), buf),
                Ok(()) => return (Ok(buf.len() - before), buf),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if buf.len() > before {
                        return (Ok(buf.len() - before), buf);
                    }
                }
                Err(e) => return (Err(ConnError::Io(e)), buf),
            }
            if let Err(e) = self.flush_tls(deadline).await {
                return (Err(e), buf);
            }
            if let Err(e) = self.pump_ciphertext(deadline, canceller).await {
                return (Err(e), buf);
            }
        }
    }

    /// Waits until the peer has sent something (or closed), without holding a buffer: what an
    /// idle connection does, so that thousands of them cost little memory. Returns at once
    /// when TLS plaintext is already buffered.
    ///
    /// # Errors
    /// [`ConnError::TimedOut`] at `deadline`; [`ConnError::Cancelled`] when `signal` fires.
    pub async fn wait_readable(
        &mut self,
        deadline: Instant,
        signal: &SharedCanceller,
    ) -> Result<(), ConnError> {
        if let Transport::Tls {
            session,
            incoming,
            fed,
            ..
        } = &mut self.transport
            && (*fed < incoming.len()
                || session.process_new_packets()?.plaintext_bytes_to_read() > 0)
        {
            // Bytes already here: ciphertext waiting to be fed, or plaintext to be read.
            return Ok(());
        }
        if signal.fired.get() {
            return Err(ConnError::Cancelled);
        }
        // A readiness poll consumes no data, so dropping it on timeout loses nothing.
        let readable = self.tcp.readable(false);
        let timer = arm(&mut self.timer, deadline);
        let fired = signal.fired();
        monoio::select! {
            result = readable => result.map_err(ConnError::Io),
            () = timer => Err(ConnError::TimedOut),
            () = fired => Err(ConnError::Cancelled),
        }
    }

    /// Whether the peer has already closed its side (a TLS close_notify was read, or a
    /// non-blocking peek of the socket sees end of stream), so that a message written now
    /// would go nowhere. Unread bytes (say, TLS session tickets) do not count as closed. One
    /// `recv(MSG_PEEK)` system call.
    pub fn peer_has_closed(&mut self) -> bool {
        if let Transport::Tls { session, .. } = &mut self.transport
            && session
                .process_new_packets()
                .is_ok_and(|state| state.peer_has_closed())
        {
            return true;
        }
        matches!(self.peek(), Ok(0) | Err(nix::errno::Errno::ECONNRESET))
    }

    /// Whether an idle connection is still open with nothing unread: a non-blocking peek sees
    /// "would block". End of stream (the peer closed) or unread bytes (a late or unsolicited
    /// message) both mean the connection must not carry the next message. One
    /// `recv(MSG_PEEK)` system call.
    pub fn is_quiet(&self) -> bool {
        matches!(self.peek(), Err(nix::errno::Errno::EAGAIN))
    }

    /// A non-blocking `recv(MSG_PEEK)` of one byte: how many bytes are waiting (at most 1; 0 at
    /// end of stream), or why none are (`EAGAIN`: nothing yet).
    fn peek(&self) -> nix::Result<usize> {
        use nix::sys::socket::{MsgFlags, recv};
        use std::os::fd::AsRawFd;
        let mut probe = [0u8; 1];
        recv(
            self.tcp.as_raw_fd(),
            &mut probe,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        )
    }

    /// Gives back the connection's own buffers (TLS ciphertext in and out); they are
    /// allocated again on the next read or write.
    pub fn release_buffers(&mut self) {
        if let Transport::Plain { outgoing } = &mut self.transport {
            *outgoing = Vec::new();
        }
        if let Transport::Tls {
            incoming,
            fed,
            outgoing,
            joined,
            ..
        } = &mut self.transport
        {
            // Ciphertext not yet fed to rustls is kept: it is part of the stream.
            if *fed == incoming.len() {
                *incoming = Vec::new();
                *fed = 0;
            }
            *outgoing = Vec::new();
            *joined = Vec::new();
        }
    }

    /// Writes all of `parts`, in order, before `deadline`.
    pub async fn write_all(&mut self, parts: &[&[u8]], deadline: Instant) -> Result<(), ConnError> {
        match &mut self.transport {
            Transport::Plain { outgoing } => {
                // One buffer, one write: the parts (start byte, message, end bytes) leave in a
                // single segment.
                let mut joined = std::mem::take(outgoing);
                joined.clear();
                for part in parts {
                    joined.extend_from_slice(part);
                }
                let (result, joined) = self.write_buffer(joined, deadline).await;
                if let Transport::Plain { outgoing } = &mut self.transport {
                    *outgoing = joined;
                }
                result
            }
            Transport::Tls { joined, .. } => {
                // The parts are joined, a record's worth at a time, before rustls sees them:
                // handed over one by one, each (the frame's start byte, the message, the end
                // bytes) became a TLS record of its own: three seals instead of one, three
                // records for the peer to open, and three of rustls's per-record allocations.
                let mut joined = std::mem::take(joined);
                let total: usize = parts.iter().map(|part| part.len()).sum();
                let mut done = 0;
                while done < total {
                    joined.clear();
                    copy_span(parts, done, MAX_RECORD_PLAINTEXT, &mut joined);
                    done += joined.len();
                    // rustls buffers at most 64 KiB of outgoing data: a larger write is taken
                    // in pieces, with the ciphertext flushed to the socket whenever the buffer
                    // fills.
                    let mut rest = joined.as_slice();
                    while !rest.is_empty() {
                        let Transport::Tls { session, .. } = &mut self.transport else {
                            unreachable!("transport does not change");
                        };
                        let taken = session.writer().write(rest)?;
                        rest = &rest[taken..];
                        if !rest.is_empty() {
                            if taken == 0 && !session.wants_write() {
                                return Err(ConnError::Io(io::Error::new(
                                    io::ErrorKind::WriteZero,
                                    "TLS layer accepts no more data",
                                )));
                            }
                            self.flush_tls(deadline).await?;
                        }
                    }
                }
                if let Transport::Tls { joined: kept, .. } = &mut self.transport {
                    *kept = joined;
                }
                self.flush_tls(deadline).await
            }
        }
    }

    /// Sends a TLS close_notify (if TLS) and shuts the socket's write side, best effort.
    pub async fn close(mut self) {
        if let Transport::Tls { session, .. } = &mut self.transport {
            session.send_close_notify();
            let deadline = Instant::now() + Duration::from_millis(200);
            let _ = self.flush_tls(deadline).await;
        }
        let _ = monoio::io::AsyncWriteRent::shutdown(&mut self.tcp).await;
    }

    /// Writes every byte rustls has queued (handshake messages, records, alerts).
    async fn flush_tls(&mut self, deadline: Instant) -> Result<(), ConnError> {
        let Transport::Tls {
            session, outgoing, ..
        } = &mut self.transport
        else {
            return Ok(());
        };
        while session.wants_write() {
            session.write_tls(outgoing)?;
        }
        if outgoing.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(outgoing);
        let (result, mut data) = self.write_buffer(data, deadline).await;
        data.clear();
        if let Transport::Tls { outgoing, .. } = &mut self.transport {
            *outgoing = data;
        }
        result
    }

    /// Writes all of `data` to the socket before `deadline` and gives the buffer back.
    async fn write_buffer(
        &mut self,
        data: Vec<u8>,
        deadline: Instant,
    ) -> (Result<(), ConnError>, Vec<u8>) {
        let timer = arm(&mut self.timer, deadline);
        let returned = write_deadline_returning(&mut self.tcp, data, timer, &self.own_cancel).await;
        self.renew_own_cancel();
        returned
    }

    /// Replaces the connection's own cancel signal once a timeout has fired it.
    fn renew_own_cancel(&mut self) {
        if self.own_cancel.is_fired() {
            self.own_cancel = shared_canceller();
        }
    }

    /// Reads ciphertext from the socket and feeds it to rustls; on a TLS error, sends the
    /// alert rustls queued and returns the error.
    async fn pump_ciphertext(
        &mut self,
        deadline: Instant,
        canceller: Option<&SharedCanceller>,
    ) -> Result<(), ConnError> {
        let Transport::Tls { incoming, fed, .. } = &mut self.transport else {
            return Ok(());
        };
        // Ciphertext left over from the last read is fed before the socket is read again.
        if *fed == incoming.len() {
            let mut buf = std::mem::take(incoming);
            buf.clear();
            buf.reserve(TLS_READ_CHUNK);
            let end = buf.capacity();
            let (result, slice) = read_deadline(
                &mut self.tcp,
                buf.slice_mut(0..end),
                arm(&mut self.timer, deadline),
                canceller.unwrap_or(&self.own_cancel),
            )
            .await;
            self.renew_own_cancel();
            let Transport::Tls { incoming, fed, .. } = &mut self.transport else {
                unreachable!("transport does not change");
            };
            *incoming = slice.into_inner();
            *fed = 0;
            match result {
                Ok(0) => return Err(ConnError::Closed),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        let Transport::Tls {
            session,
            incoming,
            fed,
            ..
        } = &mut self.transport
        else {
            unreachable!("transport does not change");
        };
        // Feed only while rustls wants more: its plaintext buffer holds 16 KiB, and a read
        // can carry more than that in small records. What is left waits until the caller has
        // taken the plaintext.
        let mut outcome = Ok(());
        while *fed < incoming.len() && session.wants_read() {
            let mut rest = &incoming[*fed..];
            match session.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(taken) => *fed += taken,
                Err(e) => {
                    outcome = Err(ConnError::Io(e));
                    break;
                }
            }
            if let Err(e) = session.process_new_packets() {
                outcome = Err(ConnError::Tls(e));
                break;
            }
        }
        if let Err(error) = outcome {
            // Tell the peer why (the alert), then report.
            let _ = self.flush_tls(deadline).await;
            return Err(error);
        }
        Ok(())
    }
}

impl From<rustls::Error> for ConnError {
    fn from(e: rustls::Error) -> Self {
        Self::Tls(e)
    }
}

/// Reads into `buf`, giving up at `deadline` (or when `own` fires): the read is cancelled and
/// awaited, so the buffer always comes back and no completed read is lost. A timeout fires
/// `own`, so it must belong to this read's connection alone (never one signal shared by many
/// connections: firing it would cancel all their reads).
async fn read_deadline<B: IoBufMut>(
    tcp: &mut TcpStream,
    buf: B,
    mut timer: Pin<&mut Sleep>,
    own: &SharedCanceller,
) -> (Result<usize, ConnError>, B) {
    let Some(handle) = own.canceller.borrow().as_ref().map(Canceller::handle) else {
        // Fired before the read began (shutdown raced us): nothing was read.
        return (Err(ConnError::Cancelled), buf);
    };
    let read = tcp.cancelable_read(buf, handle);
    let mut read = std::pin::pin!(read);
    monoio::select! {
        (result, buf) = &mut read => (map_read(result), buf),
        () = &mut timer => {
            fire(own);
            let (result, buf) = read.await;
            // The read may have completed before the cancel took effect: keep its bytes.
            match result {
                Ok(n) if n > 0 => (Ok(n), buf),
                _ => (Err(ConnError::TimedOut), buf),
            }
        }
    }
}

fn map_read(result: io::Result<usize>) -> Result<usize, ConnError> {
    match result {
        Ok(n) => Ok(n),
        // A reset is how many senders hang up: an ordinary close, not a fault.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(0),
        Err(e) if e.raw_os_error() == Some(libc_ecanceled()) => Err(ConnError::Cancelled),
        Err(e) => Err(ConnError::Io(e)),
    }
}

/// `ECANCELED` on Linux: what a cancelled io_uring operation completes with.
const fn libc_ecanceled() -> i32 {
    125
}

/// Writes all of `data` before `timer` fires and gives the buffer back for reuse. A timeout
/// fires `own` (cancelling the write, which is then awaited), so `own` must belong to this
/// connection alone.
async fn write_deadline_returning(
    tcp: &mut TcpStream,
    mut data: Vec<u8>,
    mut timer: Pin<&mut Sleep>,
    own: &SharedCanceller,
) -> (Result<(), ConnError>, Vec<u8>) {
    let mut written = 0;
    while written < data.len() {
        let Some(handle) = own.canceller.borrow().as_ref().map(Canceller::handle) else {
            // Fired by an earlier timeout of this write.
            return (Err(ConnError::TimedOut), data);
        };
        let end = data.len();
        let write = tcp.cancelable_write(monoio::buf::IoBuf::slice(data, written..end), handle);
        let mut write = std::pin::pin!(write);
        let (result, slice) = monoio::select! {
            r = &mut write => r,
            () = &mut timer => {
                fire(own);
                let (result, slice) = write.await;
                match result {
                    Ok(n) if n > 0 => (Ok(n), slice),
                    _ => return (Err(ConnError::TimedOut), slice.into_inner()),
                }
            }
        };
        data = slice.into_inner();
        match result {
            Ok(0) => return (Err(ConnError::Closed), data),
            Ok(n) => written += n,
            Err(e) => return (Err(ConnError::Io(e)), data),
        }
    }
    (Ok(()), data)
}

/// Appends all the plaintext rustls has decrypted to `buf`; `Ok` once the peer closed the TLS
/// session cleanly, [`io::ErrorKind::WouldBlock`] when more must be read from the socket.
///
/// Copied chunk by chunk from rustls's buffers: `read_to_end` would first zero the spare
/// capacity of `buf` on every call (the standard library's generic path for a reader without
/// its own `read_buf`), a memset of several KiB per message.
fn take_plaintext(session: &mut rustls::Connection, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut reader = session.reader();
    loop {
        let taken = {
            let chunk = reader.fill_buf()?;
            buf.extend_from_slice(chunk);
            chunk.len()
        };
        if taken == 0 {
            return Ok(());
        }
        reader.consume(taken);
    }
}

/// Appends to `out` the bytes of the concatenation of `parts` from offset `from`, up to
/// `limit` bytes in `out`.
fn copy_span(parts: &[&[u8]], mut from: usize, limit: usize, out: &mut Vec<u8>) {
    for part in parts {
        if from >= part.len() {
            from -= part.len();
            continue;
        }
        let room = limit.saturating_sub(out.len());
        if room == 0 {
            return;
        }
        let piece = &part[from..];
        out.extend_from_slice(&piece[..piece.len().min(room)]);
        from = 0;
    }
}

/// `timer` re-armed for `deadline` (made on first use).
fn arm(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant) -> Pin<&mut Sleep> {
    match timer {
        Some(armed) => {
            armed.as_mut().reset(deadline.into());
            armed.as_mut()
        }
        None => timer
            .insert(Box::pin(monoio::time::sleep_until(deadline.into())))
            .as_mut(),
    }
}

#[cfg(test)]
mod tests {
    use super::copy_span;

    #[test]
    fn copy_span_takes_every_window_of_the_concatenation() {
        let parts: [&[u8]; 4] = [b"\x0b", b"MSH|abc", b"", b"\x1c\r"];
        let all: Vec<u8> = parts.concat();
        for from in 0..=all.len() {
            for limit in 1..=all.len() + 1 {
                let mut out = Vec::new();
                copy_span(&parts, from, limit, &mut out);
                let end = (from + limit).min(all.len());
                assert_eq!(out, &all[from..end], "from {from} limit {limit}");
            }
        }
        // Windows one after the other rebuild the whole.
        let mut rebuilt = Vec::new();
        while rebuilt.len() < all.len() {
            let mut window = Vec::new();
            copy_span(&parts, rebuilt.len(), 3, &mut window);
            rebuilt.extend_from_slice(&window);
        }
        assert_eq!(rebuilt, all);
    }
}
