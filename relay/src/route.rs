//! Routing: which downstream a message goes to, from its MSH and where it came from (the
//! listener, and the sender identity the listener gave it). A pure function of the rules, the
//! header and the origin, so the same message always takes the same way. A journaled message
//! is routed again after a restart from its MSH alone, so configuration checking refuses
//! origin keys in routes when a listener journals (`ack_mode = "durable"`).

use mllp::ack::ErrorCode;
use mllp::hl7::{Field, Msh};

/// One value of a route rule: anything, or exactly these bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Pattern {
    /// Matches every value, empty included (written `*` in configs).
    #[default]
    Any,
    /// Matches exactly this value (case-sensitive, as HL7 codes are).
    Exact(Vec<u8>),
}

impl Pattern {
    /// Parses a config value: `*` is [`Pattern::Any`], anything else is exact.
    pub fn parse(text: &str) -> Self {
        if text == "*" {
            Self::Any
        } else {
            Self::Exact(text.as_bytes().to_vec())
        }
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(expected) => expected == value,
        }
    }
}

/// Where a message came from, for the route keys `listener` and `sender`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The listener's name (empty when unknown: a journaled message after a restart).
    pub listener: &'a str,
    /// The sender identity the listener gave the message, if it checks identities.
    pub sender: Option<&'a str>,
}

/// The first component of a field (its namespace ID, e.g. `LAB` in `LAB^1.2.3^ISO`): what route
/// rules and sender identities compare MSH-3 to MSH-6 by.
pub(crate) fn namespace(field: Field<'_>) -> &[u8] {
    field.component(1).map_or(&[][..], |c| c.as_bytes())
}

/// What a route rule looks at in MSH. The application and facility fields (MSH-3 to MSH-6)
/// are compared by their first component (the namespace ID, e.g. `LAB` in `LAB^1.2.3^ISO`);
/// MSH-9 by its message type (`ORU`) and trigger event (`R01`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteMatch {
    /// MSH-3.1.
    pub sending_application: Pattern,
    /// MSH-4.1.
    pub sending_facility: Pattern,
    /// MSH-5.1.
    pub receiving_application: Pattern,
    /// MSH-6.1.
    pub receiving_facility: Pattern,
    /// MSH-9.1.
    pub message_type: Pattern,
    /// MSH-9.2.
    pub trigger_event: Pattern,
    /// The listener the message came in on, by name.
    pub listener: Pattern,
    /// The sender identity the listener gave it, by name (see `[[listener.sender]]`); a
    /// message without one matches only `*`.
    pub sender: Pattern,
}

impl RouteMatch {
    /// Whether `msh` matches every pattern but possibly the trigger event (first), and the
    /// trigger event too (second).
    fn check(&self, msh: &Msh<'_>, origin: Origin<'_>) -> (bool, bool) {
        let kind = msh.message_type();
        let sender_matches = match (&self.sender, origin.sender) {
            (Pattern::Any, _) => true,
            (pattern, Some(sender)) => pattern.matches(sender.as_bytes()),
            (Pattern::Exact(_), None) => false,
        };
        let but_trigger = sender_matches
            && self.listener.matches(origin.listener.as_bytes())
            && self
                .sending_application
                .matches(namespace(msh.sending_application()))
            && self
                .sending_facility
                .matches(namespace(msh.sending_facility()))
            && self
                .receiving_application
                .matches(namespace(msh.receiving_application()))
            && self
                .receiving_facility
                .matches(namespace(msh.receiving_facility()))
            && self.message_type.matches(kind.code);
        (
            but_trigger,
            but_trigger && self.trigger_event.matches(kind.trigger),
        )
    }

    /// Whether `msh`, from `origin`, matches every pattern.
    pub fn matches(&self, msh: &Msh<'_>, origin: Origin<'_>) -> bool {
        self.check(msh, origin).1
    }

    /// Whether the rule looks at where a message came from (`listener` or `sender`).
    pub fn uses_origin(&self) -> bool {
        self.listener != Pattern::Any || self.sender != Pattern::Any
    }
}

/// A routing rule: messages whose MSH matches go to `downstream` (an index into
/// [`Config::downstreams`](crate::config::Config::downstreams)). Rules are tried in order; the first match wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// What the rule matches.
    pub matcher: RouteMatch,
    /// Where matching messages go.
    pub downstream: usize,
}

/// The downstream for `msh` from `origin`: the first matching rule's, else `default`. Without either, the
/// table 0357 code of the refusal: 201 (unsupported event code) when a rule matched all but
/// the trigger event, 200 (unsupported message type) otherwise.
///
/// # Errors
/// The code above, when the message has nowhere to go.
pub fn pick(
    rules: &[Route],
    default: Option<usize>,
    msh: &Msh<'_>,
    origin: Origin<'_>,
) -> Result<usize, ErrorCode> {
    let mut trigger_only = false;
    for route in rules {
        match route.matcher.check(msh, origin) {
            (_, true) => return Ok(route.downstream),
            (but_trigger, false) => trigger_only |= but_trigger,
        }
    }
    default.ok_or(if trigger_only {
        ErrorCode::UnsupportedEventCode
    } else {
        ErrorCode::UnsupportedMessageType
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results from LAB to downstream 0, ADT to 1.
    fn rules() -> Vec<Route> {
        vec![
            Route {
                matcher: RouteMatch {
                    sending_application: Pattern::parse("LAB"),
                    message_type: Pattern::parse("ORU"),
                    trigger_event: Pattern::parse("R01"),
                    ..RouteMatch::default()
                },
                downstream: 0,
            },
            Route {
                matcher: RouteMatch {
                    message_type: Pattern::parse("ADT"),
                    ..RouteMatch::default()
                },
                downstream: 1,
            },
        ]
    }

    fn msh(sender: &str, kind: &str) -> Vec<u8> {
        format!("MSH|^~\\&|{sender}|HOSP|EHR|CLINIC|2026||{kind}|1|P|2.5\r").into_bytes()
    }

    #[test]
    fn first_matching_rule_wins_and_fields_compare_by_namespace() {
        let rules = rules();
        let route = |sender: &str, kind: &str| {
            pick(
                &rules,
                None,
                &Msh::parse(&msh(sender, kind)).unwrap(),
                Origin::default(),
            )
        };
        assert_eq!(route("LAB", "ORU^R01"), Ok(0));
        assert_eq!(
            route("LAB^1.2.3^ISO", "ORU^R01^ORU_R01"),
            Ok(0),
            "MSH-3 by its namespace ID"
        );
        assert_eq!(route("OTHER", "ADT^A01"), Ok(1));
        assert_eq!(route("LAB", "ADT^A08"), Ok(1));
        assert_eq!(
            route("LAB", "ORU^R30"),
            Err(ErrorCode::UnsupportedEventCode)
        );
        assert_eq!(
            route("LAB", "SIU^S12"),
            Err(ErrorCode::UnsupportedMessageType)
        );
        assert_eq!(
            route("PHARM", "ORU^R01"),
            Err(ErrorCode::UnsupportedMessageType)
        );
    }

    #[test]
    fn the_default_takes_what_no_rule_matches() {
        let siu = msh("X", "SIU^S12");
        let siu = Msh::parse(&siu).unwrap();
        assert_eq!(pick(&rules(), Some(1), &siu, Origin::default()), Ok(1));
        // No rules at all: everything to the default (a one-downstream relay).
        assert_eq!(pick(&[], Some(0), &siu, Origin::default()), Ok(0));
    }

    #[test]
    fn rules_can_match_the_listener_and_the_sender_identity() {
        let rules = vec![
            Route {
                matcher: RouteMatch {
                    sender: Pattern::parse("lab-a"),
                    ..RouteMatch::default()
                },
                downstream: 0,
            },
            Route {
                matcher: RouteMatch {
                    listener: Pattern::parse("adt"),
                    ..RouteMatch::default()
                },
                downstream: 1,
            },
        ];
        assert!(rules[0].matcher.uses_origin() && rules[1].matcher.uses_origin());
        assert!(!RouteMatch::default().uses_origin());
        let bytes = msh("LAB", "ORU^R01");
        let msh = Msh::parse(&bytes).unwrap();
        let from = |listener, sender| Origin { listener, sender };
        assert_eq!(
            pick(&rules, None, &msh, from("results", Some("lab-a"))),
            Ok(0)
        );
        assert_eq!(pick(&rules, None, &msh, from("adt", Some("lab-b"))), Ok(1));
        assert_eq!(pick(&rules, None, &msh, from("adt", None)), Ok(1));
        assert_eq!(
            pick(&rules, None, &msh, from("results", None)),
            Err(ErrorCode::UnsupportedMessageType),
            "a message without an identity matches no sender rule"
        );
    }

    #[test]
    fn patterns() {
        assert!(Pattern::parse("*").matches(b""));
        assert!(Pattern::parse("ORU").matches(b"ORU"));
        assert!(
            !Pattern::parse("ORU").matches(b"oru"),
            "HL7 codes are case-sensitive"
        );
    }
}
