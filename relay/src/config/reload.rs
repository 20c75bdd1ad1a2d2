//! What a reload may change while the relay runs, and what needs a restart.
//!
//! A reload puts a whole new [`Config`] in force between two messages (see
//! [`Live`](super::Live)). Most settings are read per message or per connection and simply
//! take effect: routes, sender identities, ACK policies, framing and limits of new
//! connections, timeouts, TLS certificates and client allowlists (new handshakes), source
//! allowlists, downstream addresses, TLS and timeouts, character sets, batches, the readiness
//! window, the audit setting's file is reopened. What the relay built at start from the
//! configuration cannot follow, and a change to it is refused, naming the key:
//! - the worker threads, their pinning and I/O driver, and the metrics address;
//! - the listeners' number, names and addresses (sockets are bound at start), their ACK mode
//!   and duplicate window (custody is set up per mode at start);
//! - the journal;
//! - the downstreams' order: a message queued or journaled for a downstream names it by
//!   position, so existing downstreams keep theirs (new ones are added at the end, except
//!   beside a durable listener, whose delivery lanes are made per downstream at start), and a
//!   `single` link's address and policy (its connection task runs from start).

use super::{Config, LinkPolicy};

/// How a new configuration is put in force: the configuration to run (the new one, with the
/// running value kept for each setting that needs a restart), and those settings, each as
/// `key: …` for the log.
#[derive(Debug)]
pub struct Plan {
    pub config: Config,
    pub kept: Vec<String>,
}

/// What of `new` can be put in force over `current`.
///
/// # Errors
/// The changes that leave no consistent way to apply the rest (the listeners' number or
/// names; the downstreams' order, a removal, an addition beside a durable listener, a `single`
/// link), each as `key: …`; nothing is then applied.
pub fn plan(current: &Config, mut new: Config) -> Result<Plan, Vec<String>> {
    let mut refused = Vec::new();
    if current.listeners.len() != new.listeners.len() {
        refused.push("listener: the number of listeners changed".to_owned());
    }
    for (i, (old, fresh)) in current.listeners.iter().zip(&new.listeners).enumerate() {
        if old.name != fresh.name {
            refused.push(format!(
                "listener[{i}].name: {:?} became {:?}",
                old.name, fresh.name
            ));
        }
    }
    let durable = current.uses_ack_mode(super::AckMode::Durable);
    if new.downstreams.len() < current.downstreams.len() {
        refused.push("downstream: a downstream was removed".to_owned());
    } else if durable && new.downstreams.len() != current.downstreams.len() {
        refused.push(
            "downstream: a downstream was added beside a durable listener (its delivery lanes \
             are made at start)"
                .to_owned(),
        );
    }
    for (i, (old, fresh)) in current.downstreams.iter().zip(&new.downstreams).enumerate() {
        if old.name != fresh.name {
            refused.push(format!(
                "downstream[{i}].name: {:?} became {:?} (queued messages name downstreams by \
                 position: add new ones at the end)",
                old.name, fresh.name
            ));
        }
        let single = old.link == LinkPolicy::Single || fresh.link == LinkPolicy::Single;
        if old.link != fresh.link || (single && old.addr != fresh.addr) {
            refused.push(format!(
                "downstream[{i}].link: a single link's policy or address changed (its \
                 connection task runs from start)"
            ));
        }
    }
    if !refused.is_empty() {
        return Err(refused);
    }

    let mut kept = Vec::new();
    let mut keep = |key: String, same: bool| {
        if !same {
            kept.push(format!(
                "{key}: changed in the file, but only a restart applies it; the running value \
                 stays until then"
            ));
        }
    };
    keep("workers".into(), current.workers == new.workers);
    new.workers = current.workers;
    keep("pin_workers".into(), current.pin_workers == new.pin_workers);
    new.pin_workers = current.pin_workers;
    keep("driver".into(), current.driver == new.driver);
    new.driver = current.driver;
    keep("metrics".into(), current.metrics_addr == new.metrics_addr);
    new.metrics_addr = current.metrics_addr;
    keep("journal".into(), current.journal == new.journal);
    new.journal.clone_from(&current.journal);
    for (i, (old, fresh)) in current.listeners.iter().zip(&mut new.listeners).enumerate() {
        let key = |field: &str| format!("listener[{i}].{field}");
        keep(key("listen"), old.addr == fresh.addr);
        fresh.addr = old.addr;
        keep(key("ack_mode"), old.ack_mode == fresh.ack_mode);
        fresh.ack_mode = old.ack_mode;
        keep(key("duplicate_window"), old.duplicates == fresh.duplicates);
        fresh.duplicates = old.duplicates;
        // TLS refusals keep counting where they did (the metrics' counters never go back):
        // the new TLS configuration is built again around the running counters.
        if let Some(tls) = &fresh.tls
            && let Ok(rebuilt) = netio::tls::ReloadableServerConfig::load(
                tls.settings().clone(),
                old.tls_rejections.clone(),
            )
        {
            fresh.tls = Some(rebuilt);
            fresh.tls_rejections = old.tls_rejections.clone();
        }
    }
    Ok(Plan { config: new, kept })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AckMode, DownstreamConfig, ListenerConfig};

    fn config() -> Config {
        Config::single(
            ListenerConfig::plain("127.0.0.1:2575".parse().unwrap()),
            DownstreamConfig::plain("ehr", "127.0.0.1:6661".parse().unwrap()),
        )
    }

    #[test]
    fn per_message_settings_apply_and_built_ones_keep_their_running_value() {
        let current = config();
        let mut new = config();
        new.downstreams[0].addr = "127.0.0.1:6662".parse().unwrap();
        new.downstreams.push(DownstreamConfig::plain(
            "archive",
            "127.0.0.1:6663".parse().unwrap(),
        ));
        new.listeners[0].ack_policy = mllp::ack::AckPolicy::Always;
        new.workers += 1;
        new.listeners[0].addr = "127.0.0.1:2576".parse().unwrap();
        new.listeners[0].ack_mode = AckMode::Local;
        let plan = plan(&current, new).unwrap();
        assert_eq!(plan.config.downstreams.len(), 2);
        assert_eq!(plan.config.downstreams[0].addr.port(), 6662);
        assert_eq!(
            plan.config.listeners[0].ack_policy,
            mllp::ack::AckPolicy::Always
        );
        assert_eq!(plan.config.workers, current.workers);
        assert_eq!(plan.config.listeners[0].addr, current.listeners[0].addr);
        assert_eq!(plan.config.listeners[0].ack_mode, AckMode::Passthrough);
        let keys: Vec<&str> = plan
            .kept
            .iter()
            .map(|k| k.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            ["workers", "listener[0].listen", "listener[0].ack_mode"]
        );
    }

    #[test]
    fn structural_changes_refuse_the_reload() {
        let current = config();
        let mut renamed = config();
        renamed.downstreams[0].name = "other".into();
        assert!(plan(&current, renamed).unwrap_err()[0].starts_with("downstream[0].name:"));
        let mut durable = config();
        durable.listeners[0].ack_mode = AckMode::Durable;
        let mut added = durable.clone();
        added.downstreams.push(DownstreamConfig::plain(
            "archive",
            "127.0.0.1:6663".parse().unwrap(),
        ));
        assert_eq!(plan(&durable, added).unwrap_err().len(), 1);
        let mut single = config();
        single.downstreams[0].link = LinkPolicy::Single;
        assert!(plan(&current, single).unwrap_err()[0].starts_with("downstream[0].link:"));
    }
}
