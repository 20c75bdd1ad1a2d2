//! HL7 view, escapes, normalisation and ACKs on arbitrary bytes.
//! The invariants live in `mllp::fuzzing::hl7`, shared with the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mllp::fuzzing::hl7(data));
