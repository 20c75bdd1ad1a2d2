//! The ACKs the relay writes itself, as opposed to the receiver's own ACKs, which pass through
//! byte for byte. Every generated ACK is made by [`Answer`]: under the listener's ACK policy,
//! with a fresh MSH-7 and an MSH-10 unique within the run, and, when it refuses, an ERR with
//! the table 0357 code and the reason.
//!
//! The clock is read and an ID taken only when such an ACK is written: relaying a message
//! whose ACK passes through reads no clock and allocates nothing here.

use std::cell::Cell;
use std::io::Write as _;
use std::time::SystemTime;

use mllp::ack::{self, AckDecision, AckParams, AckPolicy, ErrorCode, ErrorDetail, Outcome};
use mllp::batch::{self, AckBatchParams, Batch};
use mllp::hl7::Msh;
use mllp::timestamp::write_hl7_timestamp;

/// The MSH-10 of one worker's generated ACKs: `R<worker>-<n>`, unique within a run.
pub(super) struct ControlIds {
    worker: usize,
    generated: Cell<u64>,
}

impl ControlIds {
    pub(super) fn new(worker: usize) -> Self {
        Self {
            worker,
            generated: Cell::new(0),
        }
    }

    /// Writes the next ID over `out`.
    fn write_next(&self, out: &mut Vec<u8>) {
        let n = self.generated.get() + 1;
        self.generated.set(n);
        out.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(out, "R{}-{n}", self.worker);
    }
}

/// Why the relay refuses or fails a message in its own ACK: the ERR's code and the text of
/// MSA-3 and ERR-8.
#[derive(Debug, Clone, Copy)]
pub(super) struct Refusal<'t> {
    pub(super) code: ErrorCode,
    pub(super) text: &'t [u8],
}

/// A session's answer to its sender, in buffers reused from message to message.
#[derive(Default)]
pub(super) struct Answer {
    /// The ACK payload to send back (generated here, or the receiver's swapped in).
    pub(super) bytes: Vec<u8>,
    timestamp: Vec<u8>,
    control_id: Vec<u8>,
}

impl Answer {
    /// Writes (over whatever the answer held) the relay's own ACK for `msh` with `outcome` (and `refusal`'s ERR, if any) under
    /// `policy`; `None` when, by MSH-15/16 or the policy, no ACK is due.
    pub(super) fn generate(
        &mut self,
        msh: &Msh<'_>,
        outcome: Outcome,
        refusal: Option<Refusal<'_>>,
        policy: AckPolicy,
        ids: &ControlIds,
    ) -> Option<ack::AckCode> {
        self.bytes.clear();
        self.stamp(ids);
        let params = AckParams {
            text: refusal.map(|r| r.text),
            error: refusal.map(|r| ErrorDetail {
                code: r.code,
                diagnostic: r.text,
            }),
            ..AckParams::new(&self.timestamp, &self.control_id)
        };
        match ack::build_ack(msh, outcome, policy, &params, &mut self.bytes) {
            AckDecision::Send(code) => Some(code),
            AckDecision::NotDue => None,
        }
    }

    /// Writes an AR for a frame without a readable MSH: no MSA-2 can name it, and no
    /// MSH-15/16 or policy applies (the sender must hear that the frame was not taken).
    pub(super) fn reject_headerless(&mut self, refusal: Refusal<'_>, ids: &ControlIds) {
        self.bytes.clear();
        self.stamp(ids);
        let params = AckParams {
            text: Some(refusal.text),
            ..AckParams::new(&self.timestamp, &self.control_id)
        };
        let detail = ErrorDetail {
            code: refusal.code,
            diagnostic: refusal.text,
        };
        ack::write_headerless_reject(&params, detail, &mut self.bytes);
    }

    /// Writes the acknowledgement batch answering `batch` (split from `input`): `acks[i]` is
    /// message `i`'s ACK, or `None` when none was due.
    pub(super) fn write_ack_batch(
        &mut self,
        input: &[u8],
        batch: &Batch,
        acks: &[Option<&[u8]>],
        ids: &ControlIds,
    ) {
        self.stamp(ids);
        let params = AckBatchParams::new(&self.timestamp, &self.control_id);
        batch::write_ack_batch(input, batch, acks, &params, &mut self.bytes);
    }

    /// Gives every buffer back (an idle connection holds none).
    pub(super) fn release(&mut self) {
        *self = Self::default();
    }

    fn stamp(&mut self, ids: &ControlIds) {
        write_hl7_timestamp(SystemTime::now(), &mut self.timestamp);
        ids.write_next(&mut self.control_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mllp::ack::{AckCode, parse_ack};

    const ORIGINAL: &[u8] = b"MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20261122||ORU^R01|M1|P|2.5.1\r";
    const ENHANCED_NE: &[u8] =
        b"MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20261122||ORU^R01|M2|P|2.5|||NE|NE\r";

    #[test]
    fn generated_acks_name_the_message_and_take_fresh_ids() {
        let ids = ControlIds::new(3);
        let mut answer = Answer::default();
        let msh = Msh::parse(ORIGINAL).unwrap();
        let code = answer.generate(&msh, Outcome::Accepted, None, AckPolicy::Negotiated, &ids);
        assert_eq!(code, Some(AckCode::AA));
        let first = answer.bytes.clone();
        assert_eq!(parse_ack(&first).unwrap().acknowledged_id, b"M1");
        assert!(
            String::from_utf8_lossy(&first).contains("|R3-1|"),
            "{first:?}"
        );

        let refusal = Refusal {
            code: ErrorCode::ApplicationInternal,
            text: b"not delivered",
        };
        let code = answer.generate(
            &msh,
            Outcome::Error,
            Some(refusal),
            AckPolicy::Negotiated,
            &ids,
        );
        assert_eq!(code, Some(AckCode::AE));
        let text = String::from_utf8_lossy(&answer.bytes).into_owned();
        assert!(text.contains("|R3-2|") && text.contains("\rERR|"), "{text}");
        assert!(text.contains("not delivered"), "{text}");
    }

    #[test]
    fn no_ack_is_written_when_none_is_due() {
        let ids = ControlIds::new(0);
        let mut answer = Answer::default();
        let msh = Msh::parse(ENHANCED_NE).unwrap();
        let code = answer.generate(&msh, Outcome::Accepted, None, AckPolicy::Negotiated, &ids);
        assert_eq!(code, None);
        // The policy can still force one.
        let code = answer.generate(&msh, Outcome::Accepted, None, AckPolicy::Always, &ids);
        assert_eq!(code, Some(AckCode::CA));
    }

    #[test]
    fn a_headerless_frame_gets_an_ar_without_msa_2() {
        let ids = ControlIds::new(1);
        let mut answer = Answer::default();
        let refusal = Refusal {
            code: ErrorCode::SegmentSequence,
            text: b"message rejected: no MSH",
        };
        answer.reject_headerless(refusal, &ids);
        let parsed = parse_ack(&answer.bytes).unwrap();
        assert_eq!(parsed.code, AckCode::AR);
        assert_eq!(parsed.acknowledged_id, b"");
        answer.release();
        assert!(answer.bytes.capacity() == 0 && answer.timestamp.capacity() == 0);
    }
}
