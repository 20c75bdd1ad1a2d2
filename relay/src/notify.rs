//! systemd's service notification protocol (`sd_notify(3)`), for a `Type=notify` unit: the
//! relay tells the service manager when it is ready (so `systemctl start` returns once every
//! listener accepts connections, and units ordered after it start only then), when a SIGHUP
//! reload starts and ends, and when a stop starts draining.
//!
//! The protocol: one datagram per state change, sent to the `AF_UNIX` socket that
//! `$NOTIFY_SOCKET` names (a file system path, or an abstract name when it starts with `@`),
//! holding newline-separated `KEY=VALUE` assignments. Without `$NOTIFY_SOCKET` (not started
//! by systemd, or by a unit of another type) nothing is sent. A failed send is logged and
//! otherwise ignored: the relay serves the same either way, and systemd itself reports a
//! notify unit that never became ready.
//!
//! Part of the binary, not of the `relay` library: only the process that owns the listeners
//! and the signals knows these states.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The environment variable systemd sets for a `Type=notify` service.
pub(crate) const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// How long one notification may wait for room in the service manager's socket buffer: the
/// main thread sends them, and it must get back to watching the signals even if systemd
/// stops reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Where notifications go: nowhere (not under systemd), or the socket `$NOTIFY_SOCKET` named.
#[derive(Debug)]
pub(crate) struct Notifier {
    target: Option<Target>,
}

#[derive(Debug)]
struct Target {
    /// Unbound: the service manager identifies the sender by its credentials, not an address.
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `$NOTIFY_SOCKET` as given, for log lines.
    name: String,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for: silent when it is unset or empty; a value that
    /// names no usable socket is logged (once) and also leaves it silent.
    pub(crate) fn from_env() -> Self {
        let Some(value) = std::env::var_os(NOTIFY_SOCKET) else {
            return Self::silent();
        };
        Self::for_socket(&value).unwrap_or_else(|e| {
            tracing::warn!(
                socket = %value.to_string_lossy(),
                error = %e,
                "{NOTIFY_SOCKET} names no usable socket: systemd will not hear that the relay \
                 is ready"
            );
            Self::silent()
        })
    }

    /// A notifier for the socket `value` names, as `$NOTIFY_SOCKET` would give it: an absolute
    /// path, `@NAME` for an abstract socket, or empty for none.
    pub(crate) fn for_socket(value: &OsStr) -> io::Result<Self> {
        let bytes = value.as_bytes();
        let addr = match bytes {
            [] => return Ok(Self::silent()),
            [b'@', name @ ..] => SocketAddr::from_abstract_name(name)?,
            [b'/', ..] => SocketAddr::from_pathname(value)?,
            _ => {
                // systemd 254 also hands out `vsock:CID:PORT` (to a virtual machine's
                // manager); a relay runs under a local service manager.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not an absolute path or an @abstract socket name",
                ));
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Self {
            target: Some(Target {
                socket,
                addr,
                name: value.to_string_lossy().into_owned(),
            }),
        })
    }

    /// A notifier that sends nothing.
    pub(crate) fn silent() -> Self {
        Self { target: None }
    }

    /// Sends `message` (from [`ready`], [`reloading`] or [`stopping`]); `Ok` without sending
    /// when silent.
    pub(crate) fn send(&self, message: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let sent = target
            .socket
            .send_to_addr(message.as_bytes(), &target.addr)?;
        if sent == message.len() {
            Ok(())
        } else {
            // A datagram is sent whole or not at all; this is the kernel breaking that promise.
            Err(io::Error::other(format!(
                "sent {sent} of {} bytes",
                message.len()
            )))
        }
    }

    /// [`Self::send`], a failure logged as a warning (the relay goes on serving).
    pub(crate) fn notify(&self, message: &str) {
        if let Err(e) = self.send(message) {
            let socket = self.target.as_ref().map_or("", |t| t.name.as_str());
            let first = message.lines().next().unwrap_or_default();
            tracing::warn!(socket, error = %e, "cannot tell systemd {first}");
        }
    }
}

/// The relay is serving: after start-up, and again after a reload. `status` is what
/// `systemctl status` shows.
pub(crate) fn ready(status: &str) -> String {
    format!("READY=1\nSTATUS={}", one_line(status))
}

/// A reload (SIGHUP) has started, at `monotonic_usec` on `CLOCK_MONOTONIC` (systemd
/// requires the time with `RELOADING=1`, to tell this reload from an earlier one);
/// [`ready`] follows when it is done.
pub(crate) fn reloading(monotonic_usec: u64) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\nSTATUS=reloading certificates")
}

/// A stop (SIGTERM, SIGINT) has started: the relay drains the messages in flight and exits.
pub(crate) fn stopping() -> String {
    "STOPPING=1\nSTATUS=stopping: draining the messages in flight".to_owned()
}

/// Now on `CLOCK_MONOTONIC`, in microseconds (the clock and unit of `MONOTONIC_USEC`).
pub(crate) fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // CLOCK_MONOTONIC is never negative; 0 is only a fallback that keeps the types honest.
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let micros = u64::try_from(now.tv_nsec / 1_000).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(micros)
}

/// `text` as one assignment's value: a line break would end the assignment and start
/// another, so control characters become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::ffi::OsString;

    use testkit::dir::TempDir;

    #[test]
    fn messages_are_newline_separated_assignments() {
        assert_eq!(
            ready("listening on 127.0.0.1:2575 (plain)"),
            "READY=1\nSTATUS=listening on 127.0.0.1:2575 (plain)"
        );
        assert_eq!(
            reloading(1_234_567),
            "RELOADING=1\nMONOTONIC_USEC=1234567\nSTATUS=reloading certificates"
        );
        assert!(stopping().starts_with("STOPPING=1\nSTATUS="));
        for message in [ready("x"), reloading(1), stopping()] {
            for line in message.lines() {
                let (key, _) = line.split_once('=').expect(line);
                assert!(
                    !key.is_empty() && key.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn a_status_cannot_add_assignments() {
        assert_eq!(
            ready("one\nREADY=0\r\ttwo"),
            "READY=1\nSTATUS=one READY=0  two"
        );
    }

    #[test]
    fn the_monotonic_clock_moves_forward_in_microseconds() {
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(5));
        let b = monotonic_usec();
        assert!(a > 0 && b >= a + 5_000, "{a} then {b}");
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        for notifier in [
            Notifier::silent(),
            Notifier::for_socket(OsStr::new("")).unwrap(),
        ] {
            assert!(notifier.target.is_none());
            notifier.send(&ready("x")).unwrap();
        }
    }

    #[test]
    fn a_value_that_names_no_socket_is_refused() {
        for bad in ["relative/notify.sock", "vsock:2:1234"] {
            let e = Notifier::for_socket(OsStr::new(bad)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}: {e}");
        }
    }

    /// What systemd would receive, read from a datagram socket standing in for its own.
    fn received(receiver: &UnixDatagram) -> String {
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0_u8; 4096];
        let n = receiver.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn notifications_reach_a_socket_named_by_path() {
        let dir = TempDir::new("notify");
        let path = dir.join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::for_socket(path.as_os_str()).unwrap();
        for message in [
            ready("listening"),
            reloading(42),
            ready("again"),
            stopping(),
        ] {
            notifier.send(&message).unwrap();
            assert_eq!(received(&receiver), message);
        }
    }

    #[test]
    fn notifications_reach_an_abstract_socket() {
        let name = format!("mllp-relay-notify-test-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier::for_socket(&OsString::from(format!("@{name}"))).unwrap();
        notifier.send(&ready("listening")).unwrap();
        assert_eq!(received(&receiver), ready("listening"));
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_error_not_a_panic() {
        let dir = TempDir::new("notify-gone");
        let notifier = Notifier::for_socket(dir.join("absent.sock").as_os_str()).unwrap();
        assert!(notifier.send(&ready("x")).is_err());
        // notify() only logs it.
        notifier.notify(&ready("x"));
    }
}
