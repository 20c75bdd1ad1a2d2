//! Listening: one `SO_REUSEPORT` socket per thread on a shared address (the kernel spreads
//! connections between them), and an accept that gives up after a while without losing a
//! connection.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use monoio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog: room for a burst of reconnecting senders after a network blip.
const BACKLOG: i32 = 1024;

/// A non-blocking listening socket with `SO_REUSEPORT` (and `SO_REUSEADDR`, so connections in
/// TIME_WAIT from an earlier run do not block the bind), so that every thread can bind the same
/// address. Register it with a thread's runtime with `TcpListener::from_std`.
///
/// # Errors
/// When the address cannot be bound (in use without `SO_REUSEPORT`, not an address of this
/// host, a privileged port).
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// Accepts one connection, or gives up after `wait` (returning `None`) so the caller can look
/// at its shutdown flag. The accept is cancelled and awaited, never dropped: a dropped
/// io_uring accept can still complete in the kernel, and that connection would be lost.
pub async fn accept_within(
    listener: &TcpListener,
    wait: Duration,
) -> Option<io::Result<(TcpStream, SocketAddr)>> {
    let canceller = monoio::io::Canceller::new();
    let accept = listener.cancelable_accept(canceller.handle());
    let mut accept = std::pin::pin!(accept);
    let tick = monoio::time::sleep(wait);
    let mut tick = std::pin::pin!(tick);
    monoio::select! {
        result = &mut accept => Some(result),
        () = &mut tick => {
            let _ = canceller.cancel();
            // A connection accepted just before the cancel is still ours to serve.
            match accept.await {
                Ok(pair) => Some(Ok(pair)),
                Err(_) => None,
            }
        }
    }
}
