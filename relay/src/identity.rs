//! Sender identity: which sending application and facility (MSH-3, MSH-4) a connection may
//! claim, per listener and per client certificate. A pure function of the rules, the
//! connection's certificate and the header, like routing.
//!
//! A listener without rules takes every header as it comes. With rules, a message is taken
//! only when one rule matches both its connection (the rule's certificate condition, if any)
//! and its header; the first such rule names the sender, and that name is what routes,
//! counters and logs use. Otherwise the message is refused, and the refusal names what did not
//! match: the certificate (no rule for it at all), MSH-3, or MSH-4.

use std::fmt;

use mllp::hl7::Msh;
use netio::tls::{CertIdentity, Thumbprint};

use crate::route::{Pattern, namespace};

/// The connection a rule applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClientMatch {
    /// Any connection on the listener, with or without a certificate.
    #[default]
    Any,
    /// A client certificate with this SHA-256 thumbprint.
    Thumbprint(Thumbprint),
    /// A client certificate with exactly this subject, as the relay renders it
    /// (`CN=lab.example, O=Hospital`; the debug log shows each client's).
    Subject(String),
}

impl ClientMatch {
    /// Whether a connection presenting `client` (or no certificate) is covered.
    pub fn matches(&self, client: Option<&CertIdentity>) -> bool {
        match self {
            Self::Any => true,
            Self::Thumbprint(expected) => client.is_some_and(|c| c.thumbprint == *expected),
            Self::Subject(expected) => {
                client.is_some_and(|c| c.subject.as_deref() == Some(expected.as_str()))
            }
        }
    }
}

/// One `[[listener.sender]]`: a named sender, the connection it uses, and the MSH-3/MSH-4
/// it may send as (compared by their first component, as routes compare them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderRule {
    /// The identity's name: the `sender` label of metrics, the `sender` route key.
    pub name: String,
    /// The connection the rule applies to.
    pub client: ClientMatch,
    /// MSH-3.1.
    pub application: Pattern,
    /// MSH-4.1.
    pub facility: Pattern,
}

/// Why no rule took a message: what the refusal names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// No rule applies to the connection's certificate (or to a connection without one).
    Client,
    /// Rules apply to the connection, but none allows its MSH-3.
    Application,
    /// Some allow its MSH-3, but none of those its MSH-4.
    Facility,
}

impl Mismatch {
    /// The field the refusal is about, for the ERR and the log.
    pub fn field(self) -> &'static str {
        match self {
            Self::Client => "client certificate",
            Self::Application => "MSH-3 (sending application)",
            Self::Facility => "MSH-4 (sending facility)",
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field())
    }
}

/// The index of the first rule that covers `client` and allows `msh`'s MSH-3 and MSH-4.
///
/// # Errors
/// What did not match, when no rule takes the message (`rules` must not be empty: a listener
/// without rules checks nothing).
pub fn identify(
    rules: &[SenderRule],
    client: Option<&CertIdentity>,
    msh: &Msh<'_>,
) -> Result<usize, Mismatch> {
    let application = namespace(msh.sending_application());
    let facility = namespace(msh.sending_facility());
    let mut closest = Mismatch::Client;
    for (index, rule) in rules.iter().enumerate() {
        if !rule.client.matches(client) {
            continue;
        }
        if !rule.application.matches(application) {
            closest = closest.max_with(Mismatch::Application);
            continue;
        }
        if !rule.facility.matches(facility) {
            closest = Mismatch::Facility;
            continue;
        }
        return Ok(index);
    }
    Err(closest)
}

impl Mismatch {
    /// The nearer miss of two: a rule that got further names the field that stopped it.
    fn max_with(self, other: Self) -> Self {
        let rank = |m: Self| match m {
            Self::Client => 0,
            Self::Application => 1,
            Self::Facility => 2,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, client: ClientMatch, application: &str, facility: &str) -> SenderRule {
        SenderRule {
            name: name.to_owned(),
            client,
            application: Pattern::parse(application),
            facility: Pattern::parse(facility),
        }
    }

    fn header(application: &str, facility: &str) -> Vec<u8> {
        format!("MSH|^~\\&|{application}|{facility}|EHR|CLINIC|2026||ORU^R01|1|P|2.5\r")
            .into_bytes()
    }

    fn cert(byte: u8, subject: &str) -> CertIdentity {
        CertIdentity {
            thumbprint: Thumbprint([byte; 32]),
            subject: Some(subject.to_owned()),
        }
    }

    #[test]
    fn a_certificate_may_send_only_as_its_own_applications() {
        let lab = cert(1, "CN=lab.example");
        let adt = cert(2, "CN=adt.example");
        let rules = vec![
            rule("lab", ClientMatch::Thumbprint(lab.thumbprint), "LAB", "*"),
            rule(
                "adt",
                ClientMatch::Subject("CN=adt.example".into()),
                "ADT",
                "MAIN",
            ),
        ];
        let id = |client: &CertIdentity, app: &str, fac: &str| {
            let bytes = header(app, fac);
            identify(&rules, Some(client), &Msh::parse(&bytes).unwrap())
        };
        assert_eq!(id(&lab, "LAB", "ANY"), Ok(0));
        assert_eq!(
            id(&lab, "LAB^1.2.3^ISO", "X"),
            Ok(0),
            "compared by namespace"
        );
        assert_eq!(id(&adt, "ADT", "MAIN"), Ok(1));
        assert_eq!(
            id(&lab, "ADT", "MAIN"),
            Err(Mismatch::Application),
            "the lab's certificate cannot send as the ADT system"
        );
        assert_eq!(id(&adt, "ADT", "WEST"), Err(Mismatch::Facility));
        assert_eq!(id(&cert(3, "CN=other"), "LAB", "X"), Err(Mismatch::Client));
        let bytes = header("LAB", "X");
        assert_eq!(
            identify(&rules, None, &Msh::parse(&bytes).unwrap()),
            Err(Mismatch::Client),
            "no certificate matches no certificate rule"
        );
    }

    #[test]
    fn rules_without_a_certificate_cover_every_connection_and_the_first_match_names_it() {
        let rules = vec![
            rule("lab-east", ClientMatch::Any, "LAB", "EAST"),
            rule("lab", ClientMatch::Any, "LAB", "*"),
        ];
        let bytes = header("LAB", "EAST");
        assert_eq!(identify(&rules, None, &Msh::parse(&bytes).unwrap()), Ok(0));
        let bytes = header("LAB", "WEST");
        let msh = Msh::parse(&bytes).unwrap();
        assert_eq!(identify(&rules, Some(&cert(9, "CN=x")), &msh), Ok(1));
        let bytes = header("PHARM", "WEST");
        assert_eq!(
            identify(&rules, None, &Msh::parse(&bytes).unwrap()),
            Err(Mismatch::Application)
        );
    }

    #[test]
    fn the_refusal_names_the_nearest_miss() {
        // One rule stops at MSH-4, a later one at MSH-3: MSH-4 is what the sender got wrong.
        let rules = vec![
            rule("a", ClientMatch::Any, "LAB", "EAST"),
            rule("b", ClientMatch::Any, "RAD", "*"),
        ];
        let bytes = header("LAB", "WEST");
        assert_eq!(
            identify(&rules, None, &Msh::parse(&bytes).unwrap()),
            Err(Mismatch::Facility)
        );
        assert_eq!(Mismatch::Facility.to_string(), "MSH-4 (sending facility)");
    }
}
