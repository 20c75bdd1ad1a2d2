//! Dialling out: a TCP connection with `TCP_NODELAY`, and the TLS handshake over it when the
//! far end speaks TLS.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use crate::conn::{Conn, ConnError};

/// How to speak TLS to a server: the client configuration (trust, pins, client certificate)
/// and the name to ask for (SNI) and, on the CA path, to check the certificate against.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect failed (refused, unreachable, reset).
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: SocketAddr, error: io::Error },
    /// The TCP connect did not complete in time.
    #[error("connect to {addr} timed out after {after:?}")]
    TimedOut { addr: SocketAddr, after: Duration },
    /// The TLS handshake failed, timed out or was cut short.
    #[error("TLS handshake with {addr} failed: {error}")]
    Handshake { addr: SocketAddr, error: ConnError },
}

/// Connects to `addr` and, with `tls`, completes the handshake. The TCP connect and the
/// handshake may each take up to `timeout`. A connection cancelled by its timeout is awaited,
/// never abandoned in the kernel (see [`crate::conn`]).
///
/// # Errors
/// [`ConnectError`], which names the address and the step that failed.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<Conn, ConnectError> {
    let tcp = match monoio::time::timeout(timeout, monoio::net::TcpStream::connect_addr(addr)).await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) => return Err(ConnectError::Connect { addr, error }),
        Err(_) => {
            return Err(ConnectError::TimedOut {
                addr,
                after: timeout,
            });
        }
    };
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Conn::plain(tcp, addr));
    };
    let session = rustls::ClientConnection::new(Arc::clone(&tls.config), tls.server_name.clone())
        .map_err(|e| ConnectError::Handshake {
        addr,
        error: ConnError::Tls(e),
    })?;
    let mut conn = Conn::tls(tcp, addr, session.into());
    conn.handshake(Instant::now() + timeout)
        .await
        .map_err(|error| ConnectError::Handshake { addr, error })?;
    Ok(conn)
}
