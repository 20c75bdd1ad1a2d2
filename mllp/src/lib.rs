//! `mllp`: the sans-IO core of an HL7 v2 MLLP relay.
//!
//! It turns bytes into frames and HL7 views, and HL7 views into ACKs. It does **no I/O**: it
//! opens no sockets and files, spawns no tasks and reads no clock (a timestamp it needs, such
//! as MSH-7 of an ACK, is passed in). Drivers (`relay`, `loadgen`) own the sockets and buffers
//! and call into this crate. Every function here is safe to call on hostile input: malformed
//! bytes give typed errors, never a panic.
//!
//! ```text
//!   socket bytes ─► frame::Deframer ─► payload ranges ─► hl7::Message / hl7::Msh
//!                      │  uses scan::Scanner (SIMD)           │
//!                      ▼                                      ▼
//!                 frame::Event (tolerated noise)      ack::write_ack ─► ACK bytes ─► frame::encode
//! ```
//!
//! # Layout
//! - [`scan`]: finds framing bytes in a slice with SIMD (AVX2, SSE2) or the scalar reference,
//!   the engine chosen once by CPU detection. The only module with `unsafe` code.
//! - [`frame`]: the streaming deframer (any chunking in, complete frames out as ranges, no copy)
//!   and the encoder.
//! - [`hl7`]: zero-copy views of a message, its segments, fields, repetitions, components and
//!   subcomponents, with delimiters read from MSH-1/MSH-2; escape decoding and encoding;
//!   opt-in segment-terminator normalisation.
//! - [`ack`]: builds original-mode (AA/AE/AR) and enhanced-mode (CA/CE/CR) ACKs for an inbound
//!   MSH, honouring MSH-15/MSH-16; parses ACKs.
//! - [`batch`]: splits FHS/BHS…BTS/FTS batch files into messages and checks their counts.
//! - [`charset`]: character sets (MSH-18): reads HL7 table 0211 values and WHATWG labels,
//!   checks payload bytes against them, transcodes whole messages to UTF-8 and ACKs back.
//! - [`timestamp`]: HL7 DTM timestamps (MSH-7) from a time the caller read.
//! - [`rand`]: a deterministic pseudo-random generator for message templates, load shapes and
//!   tests.
//! - [`error`]: the small `Copy` error types every module returns.
//!
//! # Not here
//! Sockets, TLS, timers, retries, routing, configuration files, logging: those belong to the
//! drivers. Character-set transcoding (MSH-18) is opt-in: payload bytes pass through unchanged
//! unless a driver calls into [`charset`].

pub mod ack;
pub mod batch;
pub mod charset;
pub mod error;
pub mod frame;
pub mod hl7;
pub mod rand;
pub mod scan;
pub mod timestamp;

#[doc(hidden)]
pub mod fuzzing;

pub use error::{
    AckError, BatchError, CharsetError, ConfigError, EncodeError, EscapeError, FrameError, Hl7Error,
};
