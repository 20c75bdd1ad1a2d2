//! The systems a benchmark can measure.

use crate::peers::PeerKind;
use anyhow::bail;

/// One system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// `mllp-relay`: TLS (or plain) in, plain MLLP out to the sink.
    Relay,
    /// The load generator straight to a TLS-terminating sink: a relay whose second hop costs
    /// nothing, the ceiling for any TLS relay.
    DirectTls,
    /// The load generator straight to a plain sink: no TLS, no relay.
    DirectPlain,
    /// A general-purpose TLS proxy users run today in front of an engine.
    Peer(PeerKind),
}

impl System {
    /// Every system, in report order.
    pub fn all() -> Vec<Self> {
        let mut all = vec![Self::DirectPlain, Self::DirectTls, Self::Relay];
        all.extend(PeerKind::ALL.map(Self::Peer));
        all
    }

    /// Its name in scenario files, on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Relay => "mllp-relay",
            Self::DirectTls => "direct-tls",
            Self::DirectPlain => "direct-plain",
            Self::Peer(kind) => kind.name(),
        }
    }

    /// Parses a name from [`System::name`].
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        match Self::all().into_iter().find(|s| s.name() == name.trim()) {
            Some(system) => Ok(system),
            None => {
                let known: Vec<&str> = Self::all().into_iter().map(Self::name).collect();
                bail!("unknown system {name:?} (known: {})", known.join(", "))
            }
        }
    }

    /// Whether the system is one of the two direct baselines (the sink is the system under
    /// test there).
    pub fn is_direct(self) -> bool {
        matches!(self, Self::DirectTls | Self::DirectPlain)
    }
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
