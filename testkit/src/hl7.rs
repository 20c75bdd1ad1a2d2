//! HL7 messages for tests: the ones every test sends, and the MLLP frame around them.

use mllp::frame::FramingConfig;
use mllp::hl7::Msh;

/// An ORU^R01 (a glucose result) with control ID `id`, original mode: the receiver answers
/// AA/AE/AR.
pub fn oru(id: &str) -> Vec<u8> {
    oru_with(id, "")
}

/// [`oru`] in enhanced mode (MSH-15 `AL`, MSH-16 `NE`): the receiver answers CA/CE/CR.
pub fn oru_enhanced(id: &str) -> Vec<u8> {
    oru_with(id, "|||AL|NE")
}

fn oru_with(id: &str, ack_types: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LAB|HOSP|EHR|CLINIC|20261122103000||ORU^R01^ORU_R01|{id}|P|2.5.1{ack_types}\r\
PID|1||12345^^^HOSP^MR||DOE^JANE\rOBX|1|NM|GLU^Glucose||5.4|mmol/L\r"
    )
    .into_bytes()
}

/// `payload` in an MLLP frame (VT … FS CR).
///
/// # Panics
/// When the payload holds a framing byte.
pub fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    FramingConfig::MLLP
        .encode(payload, &mut out)
        .expect("a test message without framing bytes");
    out
}

/// The MSH-10 of `message` (read leniently, as the relay reads it), or `None` when it has no
/// readable header.
pub fn control_id(message: &[u8]) -> Option<String> {
    let msh = Msh::parse_lenient(message).ok()?;
    Some(String::from_utf8_lossy(msh.control_id()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mllp::ack::{AckMode, expects_accept_ack};

    #[test]
    fn the_messages_parse_with_their_ids_and_modes() {
        let original = oru("A-1");
        let enhanced = oru_enhanced("A-2");
        assert_eq!(control_id(&original).as_deref(), Some("A-1"));
        assert_eq!(control_id(&enhanced).as_deref(), Some("A-2"));
        let msh = Msh::parse(&enhanced).unwrap();
        assert_eq!(AckMode::of(&msh), AckMode::Enhanced);
        assert!(expects_accept_ack(&msh));
        assert_eq!(control_id(b"not HL7"), None);
        let frame = framed(&original);
        assert_eq!(
            (frame[0], &frame[frame.len() - 2..]),
            (0x0B, &[0x1C, 0x0D][..])
        );
    }
}
