//! MLLP framing: a streaming deframer and an encoder.
//!
//! An MLLP frame is `start payload end`: by default `VT payload FS CR` (`0x0B … 0x1C 0x0D`).
//! The start byte and the one or two end bytes are configurable (some engines use other
//! bytes). MLLP is not byte-transparent: a payload may not contain the start byte or the first
//! end byte, so the encoder refuses such payloads instead of corrupting the stream.
//!
//! # Decoding
//! [`Deframer`] is a state machine over a buffer the caller owns; it keeps offsets into that
//! buffer, never borrows it. The driver appends bytes as they arrive and calls
//! [`Deframer::decode`] until it returns `Ok(None)` ("need more bytes"); each `Ok(Some(frame))`
//! gives the payload as a range of the buffer (no copy). Before the next read the driver calls
//! [`Deframer::reserve_for_read`], which drops the bytes no longer needed only when room is
//! short (or [`Deframer::compact`] to drop them now, or removes [`Deframer::discardable`] bytes
//! itself and reports them with [`Deframer::discard`]). Each byte is examined once, however the stream is chunked: a
//! frame that trickles in a byte at a time costs the same scan as one that arrives whole.
//!
//! Memory is bounded: a frame whose payload grows past [`FramingConfig::max_frame_len`] without
//! an end is an error as soon as the excess byte is seen, so after `decode` returns `Ok(None)`
//! the bytes the caller must keep are at most `max_frame_len + 2` (start byte, payload, and a
//! first end byte awaiting its partner). Tolerated noise between frames is discardable as it
//! is skipped.
//!
//! # Strict by default, tolerances opt-in
//! Real senders are sloppy in a few known ways. Each tolerance in [`Tolerances`] accepts one of
//! them, and every time it is used the deframer records an [`Event`] with a stable
//! [`EventCode`] and the stream offset, so an operator can see (and count) who is sloppy.
//! Without the tolerance the same input is a [`FrameError`] carrying the offset.
//!
//! Events are reported in stream order and identically however the stream is chunked (a run of
//! noise is one event, reported when the run ends). A frame may be returned before an event
//! about bytes after it (for example "FS without CR" is known only when the next byte arrives).
//! One `decode` call records at most [`EVENTS_PER_DECODE`] events, so a driver that drains
//! [`Deframer::poll_event`] after every `decode` never loses one.

use std::collections::VecDeque;
use std::ops::Range;

use crate::error::{ConfigError, EncodeError, FrameError};
use crate::scan::Scanner;

/// Vertical tab: the MLLP start byte.
pub const VT: u8 = 0x0B;
/// File separator: the first MLLP end byte.
pub const FS: u8 = 0x1C;
/// Carriage return: the second MLLP end byte (and the HL7 segment terminator).
pub const CR: u8 = 0x0D;
/// Line feed: what some senders put where CR belongs.
pub const LF: u8 = 0x0A;

/// Default largest payload accepted: 16 MiB.
///
/// Large enough for the biggest messages seen in practice (ORU results carrying base64 PDFs or
/// images in OBX-5 run to a few MiB), small enough that one connection cannot make a worker
/// buffer without bound.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 << 20;

/// How many [`Event`]s wait for [`Deframer::poll_event`] before the oldest are dropped.
///
/// A driver that polls after every `decode` never reaches it (see [`EVENTS_PER_DECODE`]); the
/// cap only stops a driver that never polls from growing memory on a noisy connection. The
/// per-code counters in [`DeframerStats`] stay exact whatever happens to the queue.
pub const EVENT_QUEUE_LIMIT: usize = 32;

/// [`Deframer::reserve_for_read`] moves kept bytes to the front of the buffer early only when
/// that frees at least this many times as many bytes: the copy then costs at most 1/16 of a
/// byte per byte read, while the buffer stays small.
pub const COMPACT_RATIO: usize = 16;

/// The most events one [`Deframer::decode`] call can record: the verdict on a lone end byte,
/// the end of a whitespace run, the end of a junk run, and a trailer event of the frame found.
pub const EVENTS_PER_DECODE: usize = 4;

/// Opt-in acceptance of known sender sloppiness. All off by default (strict MLLP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Tolerances {
    /// Accept a frame that ends with the first end byte alone (FS without CR). With this on,
    /// a frame is complete as soon as its FS arrives, so a sender that never sends the CR is
    /// not left waiting; a CR that does follow is consumed as the trailer it is.
    /// Event: [`EventCode::FsWithoutCr`].
    pub fs_without_cr: bool,
    /// Accept LF in place of the second end byte (FS LF). Event: [`EventCode::LfAfterFs`].
    pub lf_after_fs: bool,
    /// Skip CR, LF and space between frames (and before the first).
    /// Event: [`EventCode::WhitespaceBetweenFrames`].
    pub whitespace_between_frames: bool,
    /// Skip any bytes before a start byte. Event: [`EventCode::JunkBeforeStart`].
    pub junk_before_start: bool,
}

impl Tolerances {
    /// Strict MLLP: every deviation is an error.
    pub const STRICT: Self = Self {
        fs_without_cr: false,
        lf_after_fs: false,
        whitespace_between_frames: false,
        junk_before_start: false,
    };

    /// Every tolerance on.
    pub const ALL: Self = Self {
        fs_without_cr: true,
        lf_after_fs: true,
        whitespace_between_frames: true,
        junk_before_start: true,
    };

    /// Turns on the tolerance named by an [`EventCode`] config name (`fs_without_cr`,
    /// `lf_after_fs`, `whitespace_between_frames`, `junk_before_start`); returns false for an
    /// unknown name.
    pub fn enable(&mut self, name: &str) -> bool {
        match EventCode::from_config_name(name) {
            Some(EventCode::FsWithoutCr) => self.fs_without_cr = true,
            Some(EventCode::LfAfterFs) => self.lf_after_fs = true,
            Some(EventCode::WhitespaceBetweenFrames) => self.whitespace_between_frames = true,
            Some(EventCode::JunkBeforeStart) => self.junk_before_start = true,
            None => return false,
        }
        true
    }
}

/// The kind of a tolerated deviation. The codes are stable: logs, metrics and configs use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventCode {
    /// A frame ended with the first end byte not followed by the second.
    FsWithoutCr,
    /// A frame ended with the first end byte followed by LF instead of the second end byte.
    LfAfterFs,
    /// CR, LF or space bytes between frames were skipped.
    WhitespaceBetweenFrames,
    /// Other bytes before a start byte were skipped.
    JunkBeforeStart,
}

impl EventCode {
    /// Every code, in counter order.
    pub const ALL: [Self; 4] = [
        Self::FsWithoutCr,
        Self::LfAfterFs,
        Self::WhitespaceBetweenFrames,
        Self::JunkBeforeStart,
    ];

    /// The stable code for logs and metric labels, e.g. `MLLP_FS_WITHOUT_CR`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FsWithoutCr => "MLLP_FS_WITHOUT_CR",
            Self::LfAfterFs => "MLLP_LF_AFTER_FS",
            Self::WhitespaceBetweenFrames => "MLLP_WHITESPACE_BETWEEN_FRAMES",
            Self::JunkBeforeStart => "MLLP_JUNK_BEFORE_START",
        }
    }

    /// The name of the tolerance that accepts this deviation, as written in configs.
    pub const fn config_name(self) -> &'static str {
        match self {
            Self::FsWithoutCr => "fs_without_cr",
            Self::LfAfterFs => "lf_after_fs",
            Self::WhitespaceBetweenFrames => "whitespace_between_frames",
            Self::JunkBeforeStart => "junk_before_start",
        }
    }

    /// Parses a [`config_name`](Self::config_name).
    pub fn from_config_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.config_name() == name)
    }

    /// The position of this code in [`ALL`](Self::ALL), for arrays of counters.
    pub const fn index(self) -> usize {
        match self {
            Self::FsWithoutCr => 0,
            Self::LfAfterFs => 1,
            Self::WhitespaceBetweenFrames => 2,
            Self::JunkBeforeStart => 3,
        }
    }
}

impl core::fmt::Display for EventCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One use of a tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// What was tolerated.
    pub code: EventCode,
    /// Stream offset of the first byte concerned (the lone end byte, the LF, or the first
    /// skipped byte of a run).
    pub offset: u64,
    /// Bytes concerned: the length of a skipped run, 1 otherwise.
    pub len: u64,
}

/// Start byte, end sequence, size limit and tolerances of one listener or link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FramingConfig {
    start: u8,
    end: [u8; 2],
    end_len: u8,
    max_frame_len: usize,
    tolerances: Tolerances,
}

impl Default for FramingConfig {
    fn default() -> Self {
        Self::MLLP
    }
}

impl FramingConfig {
    /// Standard MLLP: `VT payload FS CR`, 16 MiB limit, strict.
    pub const MLLP: Self = Self {
        start: VT,
        end: [FS, CR],
        end_len: 2,
        max_frame_len: DEFAULT_MAX_FRAME_LEN,
        tolerances: Tolerances::STRICT,
    };

    /// Custom framing bytes (negotiated between two parties, as the HL7 transport spec allows),
    /// with the default limit and no tolerances.
    ///
    /// A frame byte must be one no message can hold where it would be misread: a control byte
    /// (0x00–0x1F or 0x7F) other than LF, which ends segments for many senders, and other than
    /// CR, which ends every segment, except as the second end byte, where MLLP itself puts it.
    /// Printable and non-ASCII bytes are refused: they can be delimiters or data.
    ///
    /// # Errors
    /// [`ConfigError::EndSequenceLength`] unless the end sequence is 1 or 2 bytes,
    /// [`ConfigError::NotAFrameByte`] for a byte messages can hold,
    /// [`ConfigError::StartByteInEndSequence`] when the start byte ends frames too.
    pub fn new(start: u8, end: &[u8]) -> Result<Self, ConfigError> {
        let (end, end_len) = match *end {
            [e] => ([e, e], 1),
            [e1, e2] => ([e1, e2], 2),
            _ => return Err(ConfigError::EndSequenceLength { len: end.len() }),
        };
        let second_end_byte = (end_len == 2).then_some(end[1]);
        let usable = |byte: u8, last: bool| {
            (byte.is_ascii_control() && byte != b'\n' && byte != CR) || (last && byte == CR)
        };
        for (byte, last) in [(start, false), (end[0], false)]
            .into_iter()
            .chain(second_end_byte.map(|b| (b, true)))
        {
            if !usable(byte, last) {
                return Err(ConfigError::NotAFrameByte { byte });
            }
        }
        if end[..usize::from(end_len)].contains(&start) {
            return Err(ConfigError::StartByteInEndSequence { byte: start });
        }
        Ok(Self {
            start,
            end,
            end_len,
            ..Self::MLLP
        })
    }

    /// Framing negotiated with a peer: `start` in place of MLLP's 0x0B and `end` in place of
    /// its 0x1C 0x0D, each only when given (`None`, or an empty `end`, keeps MLLP's), checked
    /// as [`new`](Self::new) checks them.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn negotiated(start: Option<u8>, end: &[u8]) -> Result<Self, ConfigError> {
        let end = if end.is_empty() {
            Self::MLLP.end()
        } else {
            end
        };
        Self::new(start.unwrap_or(Self::MLLP.start()), end)
    }

    /// Whether the framing bytes are MLLP's own (`0x0B`, `0x1C 0x0D`), whatever the limit and
    /// tolerances.
    pub fn has_mllp_bytes(&self) -> bool {
        self.start == Self::MLLP.start && self.end() == Self::MLLP.end()
    }

    /// Sets the largest payload accepted, in bytes.
    ///
    /// # Errors
    /// Zero is refused.
    pub fn with_max_frame_len(mut self, max_frame_len: usize) -> Result<Self, ConfigError> {
        if max_frame_len == 0 {
            return Err(ConfigError::ZeroMaxFrameLength);
        }
        self.max_frame_len = max_frame_len;
        Ok(self)
    }

    /// Sets the tolerances.
    #[must_use]
    pub fn with_tolerances(mut self, tolerances: Tolerances) -> Self {
        self.tolerances = tolerances;
        self
    }

    /// The start byte.
    pub fn start(&self) -> u8 {
        self.start
    }

    /// The end sequence (1 or 2 bytes).
    pub fn end(&self) -> &[u8] {
        &self.end[..usize::from(self.end_len)]
    }

    /// The largest payload accepted.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The tolerances in force.
    pub fn tolerances(&self) -> Tolerances {
        self.tolerances
    }

    /// Bytes the framing adds around a payload.
    pub fn overhead(&self) -> usize {
        1 + usize::from(self.end_len)
    }

    /// Checks that `payload` can be framed: no start byte, no first end byte, not oversize.
    ///
    /// # Errors
    /// [`EncodeError::FramingByteInPayload`] with the first offending offset, or
    /// [`EncodeError::Oversize`].
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), EncodeError> {
        if payload.len() > self.max_frame_len {
            return Err(EncodeError::Oversize {
                len: payload.len(),
                limit: self.max_frame_len,
            });
        }
        match Scanner::new().find_either(payload, self.start, self.end[0]) {
            Some(offset) => Err(EncodeError::FramingByteInPayload {
                offset,
                byte: payload[offset],
            }),
            None => Ok(()),
        }
    }

    /// Appends `start payload end` to `out`.
    ///
    /// # Errors
    /// As [`check_payload`](Self::check_payload); nothing is written on error.
    pub fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.check_payload(payload)?;
        out.reserve(payload.len() + self.overhead());
        out.push(self.start);
        out.extend_from_slice(payload);
        out.extend_from_slice(self.end());
        Ok(())
    }
}

/// Frames `payload` with standard MLLP framing into a new buffer.
///
/// # Errors
/// As [`FramingConfig::encode`].
pub fn encode(payload: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    FramingConfig::MLLP.encode(payload, &mut out)?;
    Ok(out)
}

/// A complete frame found by [`Deframer::decode`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The payload's position in the buffer passed to `decode`; valid until the buffer's
    /// front is discarded ([`Deframer::discard`], [`Deframer::compact`],
    /// [`Deframer::reserve_for_read`]).
    pub range: Range<usize>,
    /// Stream offset of the frame's start byte.
    pub offset: u64,
}

impl Frame {
    /// The payload bytes, from the buffer that was passed to `decode`.
    pub fn payload<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.range.clone()]
    }
}

/// Counters kept by a [`Deframer`] since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeframerStats {
    /// Complete frames returned.
    pub frames: u64,
    /// Payload bytes in those frames.
    pub payload_bytes: u64,
    /// Events by [`EventCode`], in [`EventCode::ALL`] order; see [`DeframerStats::events`].
    event_counts: [u64; EventCode::ALL.len()],
    /// Events dropped from the queue because nobody polled them (still counted above).
    pub events_dropped: u64,
}

impl DeframerStats {
    /// How many times `code` occurred.
    pub fn events(&self, code: EventCode) -> u64 {
        self.event_counts[code.index()]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames: the next byte should be a start byte.
    Outside,
    /// Inside a frame whose start byte is at this buffer index.
    InFrame { start: usize },
}

/// The streaming MLLP decoder of one connection. See the [module docs](self) for the calling
/// pattern.
///
/// ```
/// use mllp::frame::{Deframer, FramingConfig};
///
/// let mut deframer = Deframer::new(FramingConfig::MLLP);
/// let mut buf = Vec::new();
/// let mut payloads = Vec::new();
/// for chunk in [&b"\x0bMSH|^~\\&|A"[..], b"\x1c", b"\r\x0bMSH|^~\\&|B\x1c\r"] {
///     deframer.reserve_for_read(&mut buf, chunk.len());
///     buf.extend_from_slice(chunk); // in a driver: bytes read from the socket
///     while let Some(frame) = deframer.decode(&buf)? {
///         payloads.push(frame.payload(&buf).to_vec());
///         while let Some(event) = deframer.poll_event() {
///             eprintln!("tolerated {} at {}", event.code, event.offset);
///         }
///     }
/// }
/// deframer.finish()?;
/// assert_eq!(payloads, [b"MSH|^~\\&|A".to_vec(), b"MSH|^~\\&|B".to_vec()]);
/// # Ok::<(), mllp::FrameError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Deframer {
    config: FramingConfig,
    scanner: Scanner,
    state: State,
    /// Next buffer index to examine. Invariant: `discardable <= cursor <= buf.len()`.
    cursor: usize,
    /// Buffer prefix no longer needed (returned frames, skipped noise).
    /// Invariant: `discardable <= cursor`, and `discardable <= start` while in a frame.
    discardable: usize,
    /// Stream offset of buffer index 0 (bytes discarded so far).
    base: u64,
    /// A run of tolerated noise not yet reported: its code and stream offset.
    noise: Option<(EventCode, u64)>,
    /// Stream offset of a lone first end byte that completed a frame (`fs_without_cr`) and
    /// whose next byte has not been seen yet.
    bare_end: Option<u64>,
    /// The error that stopped this stream; returned again by every later call.
    failed: Option<FrameError>,
    events: VecDeque<Event>,
    stats: DeframerStats,
}

impl Deframer {
    /// A deframer with the best scan engine for this CPU.
    pub fn new(config: FramingConfig) -> Self {
        Self::with_scanner(config, Scanner::new())
    }

    /// A deframer with a chosen scan engine (tests, benchmarks).
    pub fn with_scanner(config: FramingConfig, scanner: Scanner) -> Self {
        Self {
            config,
            scanner,
            state: State::Outside,
            cursor: 0,
            discardable: 0,
            base: 0,
            noise: None,
            bare_end: None,
            failed: None,
            events: VecDeque::new(),
            stats: DeframerStats::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &FramingConfig {
        &self.config
    }

    /// Counters since this deframer was made.
    pub fn stats(&self) -> &DeframerStats {
        &self.stats
    }

    /// Stream offset of the start byte of the frame being received, if one is under way.
    /// A driver uses it to enforce a whole-frame deadline (an idle timeout alone lets a
    /// slow sender hold a connection forever, one byte at a time).
    pub fn frame_in_progress(&self) -> Option<u64> {
        match self.state {
            State::InFrame { start } => Some(self.abs(start)),
            State::Outside => None,
        }
    }

    /// Total bytes consumed from the stream so far (discarded plus examined).
    pub fn stream_position(&self) -> u64 {
        self.abs(self.cursor)
    }

    /// The next tolerance event, oldest first. Drain it after every [`decode`](Self::decode)
    /// call: one call records at most [`EVENTS_PER_DECODE`] events.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Looks for the next complete frame in `buf`.
    ///
    /// `buf` holds the stream from the first byte not yet discarded: the same bytes as at the
    /// previous call, possibly with more appended, minus any prefix reported with
    /// [`discard`](Self::discard). Returns `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// A [`FrameError`] when the stream breaks MLLP framing (outside the tolerances). The
    /// stream cannot be resynchronised after that: every later call returns the same error.
    ///
    /// # Panics
    /// If `buf` is shorter than what was already examined, which means the caller broke the
    /// contract above (it dropped bytes without [`discard`](Self::discard)).
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        assert!(
            self.cursor <= buf.len(),
            "Deframer::decode: buffer shrank below the examined position ({} < {}): bytes were \
             removed without Deframer::discard",
            buf.len(),
            self.cursor
        );
        let result = self.step(buf);
        if let Err(error) = result {
            self.failed = Some(error);
        }
        result
    }

    /// Declares the end of the stream.
    ///
    /// Call it after `decode` has returned `Ok(None)` for everything received. It reports
    /// trailing noise and a pending lone end byte as events.
    ///
    /// # Errors
    /// [`FrameError::Truncated`] if the stream ended inside a frame; the earlier error if the
    /// stream had already failed.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if let State::InFrame { start } = self.state {
            let error = FrameError::Truncated {
                frame_offset: self.abs(start),
                buffered: self.cursor - (start + 1),
            };
            self.failed = Some(error);
            return Err(error);
        }
        if let Some(offset) = self.bare_end.take() {
            self.push_event(EventCode::FsWithoutCr, offset, 1);
        }
        self.end_noise_run(self.abs(self.cursor));
        Ok(())
    }

    /// Bytes at the front of the buffer that are no longer needed.
    pub fn discardable(&self) -> usize {
        self.discardable
    }

    /// Records that the caller removed `n` bytes from the front of its buffer. Ranges of
    /// frames returned earlier are invalid afterwards.
    ///
    /// # Panics
    /// If `n` is more than [`discardable`](Self::discardable).
    pub fn discard(&mut self, n: usize) {
        assert!(
            n <= self.discardable,
            "Deframer::discard({n}) exceeds the discardable prefix ({})",
            self.discardable
        );
        self.base += n as u64;
        self.cursor -= n;
        self.discardable -= n;
        if let State::InFrame { start } = &mut self.state {
            *start -= n;
        }
    }

    /// Removes the discardable prefix from `buf` and records it. Cost: one move of the bytes
    /// kept (at most one partial frame).
    pub fn compact(&mut self, buf: &mut Vec<u8>) {
        let n = self.discardable;
        if n > 0 {
            buf.drain(..n);
            self.discard(n);
        }
    }

    /// Makes room for a read of up to `len` bytes at the end of `buf`: the usual call before
    /// each read.
    ///
    /// The discardable prefix is dropped when that is cheap (the bytes kept, which must move to
    /// the front, are at most 1/[`COMPACT_RATIO`] of the bytes freed) or when the read needs
    /// the room; the buffer grows only if that is not enough. Small frames read in small pieces
    /// thus move their partial frame rarely, and a large frame's partial successor moves once,
    /// right after the large frame completes.
    pub fn reserve_for_read(&mut self, buf: &mut Vec<u8>, len: usize) {
        let kept = buf.len() - self.discardable;
        let cheap = self.discardable >= kept.saturating_mul(COMPACT_RATIO);
        if self.discardable > 0 && (cheap || buf.capacity() - buf.len() < len) {
            self.compact(buf);
        }
        buf.reserve(len);
    }

    fn abs(&self, index: usize) -> u64 {
        self.base + index as u64
    }

    fn step(&mut self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.state {
                State::Outside => {
                    if !self.skip_outside(buf)? {
                        return Ok(None);
                    }
                }
                State::InFrame { start } => return self.scan_frame(buf, start),
            }
        }
    }

    /// Moves over the bytes between frames. Returns true when a start byte was found (the
    /// state is then `InFrame`), false when the buffer is exhausted.
    fn skip_outside(&mut self, buf: &[u8]) -> Result<bool, FrameError> {
        let tolerances = self.config.tolerances;
        let start_byte = self.config.start;
        if let Some(end_offset) = self.bare_end {
            // A frame was completed at a lone first end byte; only now can we tell whether the
            // second end byte was merely late.
            let Some(&next) = buf.get(self.cursor) else {
                return Ok(false);
            };
            self.bare_end = None;
            if next == self.config.end[1] {
                self.cursor += 1;
                self.discardable = self.cursor;
            } else if next == LF && tolerances.lf_after_fs {
                self.push_event(EventCode::LfAfterFs, self.abs(self.cursor), 1);
                self.cursor += 1;
                self.discardable = self.cursor;
            } else {
                self.push_event(EventCode::FsWithoutCr, end_offset, 1);
            }
        }
        while let Some(&byte) = buf.get(self.cursor) {
            if byte == start_byte {
                self.end_noise_run(self.abs(self.cursor));
                self.state = State::InFrame { start: self.cursor };
                self.cursor += 1;
                return Ok(true);
            }
            let in_junk = matches!(self.noise, Some((EventCode::JunkBeforeStart, _)));
            if tolerances.whitespace_between_frames && is_frame_whitespace(byte) && !in_junk {
                if self.noise.is_none() {
                    self.noise = Some((EventCode::WhitespaceBetweenFrames, self.abs(self.cursor)));
                }
                while buf
                    .get(self.cursor)
                    .is_some_and(|&b| is_frame_whitespace(b))
                {
                    self.cursor += 1;
                }
            } else if tolerances.junk_before_start {
                if !in_junk {
                    self.end_noise_run(self.abs(self.cursor));
                    self.noise = Some((EventCode::JunkBeforeStart, self.abs(self.cursor)));
                }
                self.cursor = match self.scanner.find_byte(&buf[self.cursor..], start_byte) {
                    Some(k) => self.cursor + k,
                    None => buf.len(),
                };
            } else {
                return Err(FrameError::DataOutsideFrame {
                    offset: self.abs(self.cursor),
                    byte,
                });
            }
            self.discardable = self.cursor;
        }
        Ok(false)
    }

    /// Searches the frame that began at `start` for its end.
    fn scan_frame(&mut self, buf: &[u8], start: usize) -> Result<Option<Frame>, FrameError> {
        let [end1, end2] = self.config.end;
        let max = self.config.max_frame_len;
        let payload_start = start + 1;
        // An end byte at `payload_start + max` still gives a payload of exactly `max` bytes;
        // one more byte without an end is too many.
        let window_end = buf
            .len()
            .min(payload_start.saturating_add(max).saturating_add(1));
        let found =
            self.scanner
                .find_either(&buf[self.cursor..window_end], self.config.start, end1);
        let Some(k) = found else {
            self.cursor = window_end;
            if window_end - payload_start > max {
                return Err(FrameError::Oversize {
                    frame_offset: self.abs(start),
                    limit: max,
                });
            }
            return Ok(None);
        };
        let at = self.cursor + k;
        if buf[at] == self.config.start {
            return Err(FrameError::StartInsideFrame {
                offset: self.abs(at),
                frame_offset: self.abs(start),
            });
        }
        if self.config.end_len == 1 {
            return Ok(Some(self.complete(start, at, at + 1)));
        }
        let tolerances = self.config.tolerances;
        match buf.get(at + 1) {
            None if tolerances.fs_without_cr => {
                self.bare_end = Some(self.abs(at));
                Ok(Some(self.complete(start, at, at + 1)))
            }
            None => {
                // Wait for the byte after the end byte; only it is examined again.
                self.cursor = at;
                Ok(None)
            }
            Some(&next) if next == end2 => Ok(Some(self.complete(start, at, at + 2))),
            Some(&LF) if tolerances.lf_after_fs => {
                self.push_event(EventCode::LfAfterFs, self.abs(at + 1), 1);
                Ok(Some(self.complete(start, at, at + 2)))
            }
            Some(_) if tolerances.fs_without_cr => {
                self.push_event(EventCode::FsWithoutCr, self.abs(at), 1);
                Ok(Some(self.complete(start, at, at + 1)))
            }
            Some(&found) => Err(FrameError::BadTrailer {
                offset: self.abs(at + 1),
                found,
            }),
        }
    }

    fn complete(&mut self, start: usize, end_at: usize, next: usize) -> Frame {
        let range = start + 1..end_at;
        self.stats.frames += 1;
        self.stats.payload_bytes += range.len() as u64;
        self.state = State::Outside;
        self.cursor = next;
        self.discardable = next;
        Frame {
            range,
            offset: self.abs(start),
        }
    }

    /// Reports the pending noise run, which ends at stream offset `end`.
    fn end_noise_run(&mut self, end: u64) {
        if let Some((code, offset)) = self.noise.take() {
            self.push_event(code, offset, end - offset);
        }
    }

    fn push_event(&mut self, code: EventCode, offset: u64, len: u64) {
        self.stats.event_counts[code.index()] += 1;
        if self.events.len() == EVENT_QUEUE_LIMIT {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(Event { code, offset, len });
    }
}

/// The bytes the `whitespace_between_frames` tolerance skips.
fn is_frame_whitespace(byte: u8) -> bool {
    matches!(byte, CR | LF | b' ')
}

#[cfg(test)]
mod tests;
