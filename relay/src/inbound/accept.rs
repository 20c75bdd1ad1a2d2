//! Admission of an accepted connection: the listener's source allowlist and per-worker limit,
//! then a plain or TLS connection ready for its session. The worker's accept loop calls
//! [`admit`] and runs what it returns, contained (a panic ends that session only).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use monoio::net::TcpStream;
use netio::conn::Conn;
use tracing::{error, warn};

use super::{Inbound, session};
use crate::metrics::ListenerCounter;

/// A connection let in, with its place counted on its listener until it is dropped (run or
/// not).
pub(crate) struct Admitted {
    conn: Conn,
    place: Place,
}

/// Lets a connection accepted on listener `index` in, or refuses it (closed, logged and
/// counted) when its source is not allowed, the listener is at its per-worker limit, or no
/// TLS session can be made for it.
pub(crate) fn admit(
    tcp: TcpStream,
    peer: SocketAddr,
    index: usize,
    inbound: &Rc<Inbound>,
) -> Option<Admitted> {
    let config = inbound.config();
    let listener = &config.listeners[index];
    let stats = &inbound.stats;
    let counters = stats.listener(index);
    let active = &inbound.sessions.active[index];
    if !listener.allowed_sources.is_empty()
        && !listener
            .allowed_sources
            .iter()
            .any(|net| net.contains(peer.ip()))
    {
        stats.count(counters, ListenerCounter::ConnectionsRefusedSource, 1);
        warn!(listener = %listener.name, %peer, "source address not on the allowlist: connection refused");
        return None;
    }
    if active.get() >= listener.max_connections_per_worker {
        stats.count(counters, ListenerCounter::ConnectionsRefused, 1);
        warn!(listener = %listener.name, %peer, limit = listener.max_connections_per_worker, "connection limit reached: connection refused");
        return None;
    }
    let _ = tcp.set_nodelay(true);
    let conn = match &listener.tls {
        None => Conn::plain(tcp, peer),
        Some(tls) => match rustls::ServerConnection::new(tls.current()) {
            Ok(session) => Conn::tls(tcp, peer, session.into()),
            Err(e) => {
                error!(listener = %listener.name, %peer, error = %e, "cannot start a TLS session");
                return None;
            }
        },
    };
    active.set(active.get() + 1);
    // Open before accepted: whoever reads `accepted` and then `open` never finds a connection
    // accepted but not yet open (the order a "has every session ended" check relies on).
    stats.connections_open.fetch_add(1, Ordering::Relaxed);
    counters.connections_open.fetch_add(1, Ordering::Relaxed);
    stats.count(counters, ListenerCounter::ConnectionsAccepted, 1);
    Some(Admitted {
        conn,
        place: Place {
            index,
            inbound: inbound.clone(),
        },
    })
}

impl Admitted {
    pub(crate) fn peer(&self) -> SocketAddr {
        self.conn.peer()
    }

    /// The session of this connection, to run to its end. The place is given back however it
    /// ends: returning, or panicking (the worker drops the contained task).
    ///
    /// Not an `async fn`: the session future is returned as it is, so that the task that runs
    /// it stores the connection once (a wrapping future would hold another copy).
    pub(crate) fn run(self) -> impl Future<Output = ()> {
        session::run(self.conn, self.place)
    }
}

/// A session's place on its listener: counted from admission until this is dropped.
pub(super) struct Place {
    pub(super) index: usize,
    pub(super) inbound: Rc<Inbound>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let active = &self.inbound.sessions.active[self.index];
        active.set(active.get() - 1);
        let stats = &self.inbound.stats;
        stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        stats
            .listener(self.index)
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}
