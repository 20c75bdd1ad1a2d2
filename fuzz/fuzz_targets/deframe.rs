//! Streaming deframer: identical results whole and chunked, bounded memory, clean payloads.
//! The invariants live in `mllp::fuzzing::deframe`, shared with the property tests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mllp::fuzzing::deframe(data));
