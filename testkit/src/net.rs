//! Ports and sockets: reserved ports that nobody else can take, and the connections one
//! process holds.

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};

use socket2::{Domain, Protocol, Socket, Type};

/// A port bound for as long as this value lives, and never listening by itself: connecting to
/// it is refused (the kernel answers RST), and no other socket can take it, so a test that
/// needs "a port where nothing listens", or a service that goes away and comes back on the
/// same address, never races a test running beside it for the port.
///
/// The reservation is bound with `SO_REUSEPORT` and without `SO_REUSEADDR`. A socket of the
/// same user that also sets `SO_REUSEPORT` can bind the port alongside it, and only such a
/// socket: [`listen`](Self::listen) does, and so does `mllp-relay` (its workers share their
/// listen address that way), so a relay child process can be started, killed and started
/// again on the reserved address. A port-0 bind elsewhere never picks a reserved port.
#[derive(Debug)]
pub struct ReservedPort {
    socket: Socket,
    addr: SocketAddr,
}

impl ReservedPort {
    /// A port on 127.0.0.1.
    ///
    /// # Panics
    /// When no port can be bound.
    pub fn new() -> Self {
        Self::on(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// A port on `ip` (a loopback address).
    ///
    /// # Panics
    /// When no port can be bound.
    pub fn on(ip: IpAddr) -> Self {
        let socket = tcp_socket(ip);
        socket
            .set_reuse_port(true)
            .expect("set SO_REUSEPORT on the reservation");
        socket
            .bind(&SocketAddr::new(ip, 0).into())
            .expect("bind an ephemeral port");
        let addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("the reservation's address");
        Self { socket, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A listener on the reserved address. Dropping it makes the port refuse connections
    /// again, still reserved; call this again to come back.
    ///
    /// "Again" once every copy of the listener's descriptor is closed: a child this process
    /// forks at that moment (another test starting a program) holds a copy until it execs.
    /// A test that needs the refusal waits for it: `wait_until(PATIENCE, || refuses(addr))`.
    ///
    /// # Panics
    /// When the port cannot be bound (another listener of this process still holds it with
    /// `SO_REUSEPORT` unset, which no helper here does).
    pub fn listen(&self) -> TcpListener {
        let socket = tcp_socket(self.addr.ip());
        socket.set_reuse_address(true).expect("set SO_REUSEADDR");
        socket.set_reuse_port(true).expect("set SO_REUSEPORT");
        socket
            .bind(&self.addr.into())
            .unwrap_or_else(|e| panic!("cannot listen on the reserved {}: {e}", self.addr));
        socket
            .listen(128)
            .unwrap_or_else(|e| panic!("cannot listen on the reserved {}: {e}", self.addr));
        // The reservation itself must stay bound: this is only ever a second socket.
        debug_assert!(self.socket.local_addr().is_ok());
        socket.into()
    }
}

impl Default for ReservedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether connecting to `addr` is refused now: nothing listens there.
pub fn refuses(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect(addr), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

fn tcp_socket(ip: IpAddr) -> Socket {
    let domain = if ip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).expect("create a TCP socket")
}

/// How many established TCP connections process `pid` holds open: its own socket descriptors
/// (`/proc/PID/fd`) matched against its network namespace's TCP tables in state ESTABLISHED.
/// A listening socket does not count; a connection of any other process never does.
///
/// # Panics
/// When the process's descriptors or TCP tables cannot be read (it is gone).
pub fn established_connections(pid: u32) -> usize {
    tcp_states(pid)
        .values()
        .filter(|&&state| state == ESTABLISHED)
        .count()
}

/// How many TCP sockets process `pid` holds, in any state (listening, established, closing):
/// zero once it has closed every connection it had.
///
/// # Panics
/// When the process's descriptors or TCP tables cannot be read (it is gone).
pub fn tcp_sockets(pid: u32) -> usize {
    tcp_states(pid).len()
}

/// `/proc/net/tcp`'s code for ESTABLISHED.
const ESTABLISHED: u8 = 0x01;

/// How many times the TCP tables are read for one answer (see [`tcp_states`]).
const TABLE_READS: usize = 2;

/// The TCP state of every TCP socket among `pid`'s open descriptors, by inode.
///
/// The kernel prints its TCP tables a buffer at a time and resumes by position, so while other
/// sockets come and go (tests running beside this one) a read can show a row twice or miss
/// one. Rows are therefore keyed by inode (a repeat counts once), and the tables are read
/// [`TABLE_READS`] times with the rows of every read kept (a row missed once is seen in
/// another read); where the reads disagree on a socket's state, ESTABLISHED wins.
fn tcp_states(pid: u32) -> HashMap<u64, u8> {
    let inodes = socket_inodes(pid);
    let mut states = HashMap::new();
    for _ in 0..TABLE_READS {
        for table in ["tcp", "tcp6"] {
            let path = format!("/proc/{pid}/net/{table}");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
            for (inode, state) in rows_in(&text, &inodes) {
                let kept = states.entry(inode).or_insert(state);
                if state == ESTABLISHED {
                    *kept = ESTABLISHED;
                }
            }
        }
    }
    states
}

/// The inodes of the sockets among `pid`'s open descriptors.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {dir}: {e}"));
    entries
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The (inode, state) of the rows of a `/proc/net/tcp` table whose inode is in `inodes`.
fn rows_in(table: &str, inodes: &HashSet<u64>) -> Vec<(u64, u8)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = fields.get(9)?.parse().ok()?;
            let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
            inodes.contains(&inode).then_some((inode, state))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_port_refuses_until_it_listens_and_again_after() {
        let reserved = ReservedPort::new();
        let refused = TcpStream::connect(reserved.addr()).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

        let listener = reserved.listen();
        let client = TcpStream::connect(reserved.addr()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        drop(listener);
        // Not at once if another test of this process is forking: see `listen`.
        assert!(crate::wait_until(crate::PATIENCE, || refuses(
            reserved.addr()
        )));

        // And back, with the old connection still open.
        let listener = reserved.listen();
        TcpStream::connect(reserved.addr()).unwrap();
        drop(listener);
    }

    #[test]
    fn nobody_else_can_take_a_reserved_port() {
        let reserved = ReservedPort::new();
        // std's listener sets SO_REUSEADDR, as most servers do.
        let err = TcpListener::bind(reserved.addr()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AddrInUse);
        // Port-0 binds never land on it.
        let others: Vec<TcpListener> = (0..200)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        assert!(
            others
                .iter()
                .all(|l| l.local_addr().unwrap() != reserved.addr())
        );
    }

    #[test]
    fn a_reserved_ipv6_port_works_the_same() {
        let Ok(probe) = TcpListener::bind("[::1]:0") else {
            eprintln!("no IPv6 loopback here: skipped");
            return;
        };
        drop(probe);
        let reserved = ReservedPort::on("::1".parse().unwrap());
        assert!(TcpStream::connect(reserved.addr()).is_err());
        let _listener = reserved.listen();
        TcpStream::connect(reserved.addr()).unwrap();
    }

    #[test]
    fn established_connections_counts_only_that_process_s_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // bash opens two connections (its /dev/tcp redirections) and waits.
        let mut command = std::process::Command::new("bash");
        command.args([
            "-c",
            &format!(
                "exec 3<>/dev/tcp/127.0.0.1/{port} 4<>/dev/tcp/127.0.0.1/{port}; echo open; exec sleep 30"
            ),
        ]);
        let holder = crate::Process::start(&mut command);
        assert_eq!(holder.line(), "open");
        // This process's accepted ends, and any socket of a test running beside this one, are
        // not the holder's.
        let _accepted: Vec<_> = (0..2).map(|_| listener.accept().unwrap()).collect();
        assert_eq!(established_connections(holder.pid()), 2);
        assert_eq!(tcp_sockets(holder.pid()), 2);
    }

    #[test]
    fn established_rows_are_matched_by_state_and_inode() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 20 4 30 10 -1\n\
   2: 0100007F:1F90 0100007F:D432 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 20 4 30 10 -1\n";
        let ours: HashSet<u64> = [111, 222].into();
        // 111 is listening (0A), 333 is someone else's.
        assert_eq!(rows_in(table, &ours), [(111, 0x0A), (222, ESTABLISHED)]);
    }
}
