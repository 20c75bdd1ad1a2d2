//! Dead letters of the `durable` mode: messages the receiver refused with a final answer
//! (AE/AR/CE/CR), kept with that answer in `JOURNAL/dead-letters/worker-N.log` (the journal's
//! record format, synced on write). `mllp-relay dead-letters list` shows them;
//! `mllp-relay dead-letters replay` sends them again and keeps only those still refused.
//!
//! Both read the files directly; `replay` rewrites them and therefore takes the journal's lock:
//! the relay must be stopped while it runs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mllp::ack::{AckCode, parse_ack};
use mllp::frame::{Deframer, FramingConfig};
use mllp::hl7::Msh;

use super::durable::DEAD_LETTER_DIR;
use super::journal::record::{self, Kind};

/// One refused message.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The file it is kept in.
    pub file: PathBuf,
    /// Its sequence number in its worker's journal.
    pub seq: u64,
    /// When the relay took it into custody, ms since the Unix epoch.
    pub time_ms: u64,
    /// The message, as the sender sent it.
    pub message: Vec<u8>,
    /// The receiver's answer (an ACK), or the relay's note when it was never sent.
    pub answer: Vec<u8>,
}

impl DeadLetter {
    /// MSH-10 of the message (lossy text).
    pub fn control_id(&self) -> String {
        Msh::parse_lenient(&self.message).map_or_else(
            |_| "?".into(),
            |msh| String::from_utf8_lossy(msh.control_id()).into_owned(),
        )
    }

    /// MSH-9 of the message (lossy text).
    pub fn message_type(&self) -> String {
        Msh::parse_lenient(&self.message).map_or_else(
            |_| "?".into(),
            |msh| String::from_utf8_lossy(msh.raw_field(9)).into_owned(),
        )
    }

    /// The answer's code and MSA-3 text, or the relay's note.
    pub fn answer_summary(&self) -> String {
        match parse_ack(&self.answer) {
            Ok(ack) => format!("{} {}", ack.code, String::from_utf8_lossy(ack.text)),
            Err(_) => String::from_utf8_lossy(&self.answer).into_owned(),
        }
    }
}

/// The dead-letter files under journal `root`, in name order.
fn files(root: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = root.join(DEAD_LETTER_DIR);
    let mut files = Vec::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "log") {
                    files.push(path);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    files.sort();
    Ok(files)
}

/// Every dead letter under journal `root`, and a warning per file whose end is damaged.
///
/// # Errors
/// When a file cannot be read.
pub fn read_all(root: &Path) -> io::Result<(Vec<DeadLetter>, Vec<String>)> {
    let mut letters = Vec::new();
    let mut warnings = Vec::new();
    for file in files(root)? {
        let bytes = fs::read(&file)?;
        let scan = record::scan(&bytes, record::Stamp::Plain, |_, record| {
            if record.kind != Kind::DeadLetter {
                return;
            }
            if let Some((message, answer)) = record::decode_dead_letter(record.payload) {
                letters.push(DeadLetter {
                    file: file.clone(),
                    seq: record.seq,
                    time_ms: record.time_ms,
                    message: message.to_vec(),
                    answer: answer.to_vec(),
                });
            }
        });
        if let Some((offset, damage)) = scan.damage {
            warnings.push(format!(
                "{}: unreadable from byte {offset} ({damage}); {} bytes after it ignored",
                file.display(),
                bytes.len() - offset
            ));
        }
    }
    Ok((letters, warnings))
}

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Accepted (AA/CA) by the receiver: removed from the dead letters.
    pub accepted: usize,
    /// Refused again, or not answered: kept.
    pub kept: usize,
}

/// Sends every dead letter under `root` to the plain MLLP receiver at `addr` (framed with
/// `framing`: the receiver's, when it negotiated other bytes), one at a time,
/// waiting up to `ack_timeout` for each ACK (MSA-2 checked); those accepted are removed, the
/// others kept. `report` is told each outcome. Takes the journal's lock (the relay must not
/// run).
///
/// # Errors
/// When the lock is held, a file cannot be read or rewritten.
pub fn replay(
    root: &Path,
    addr: SocketAddr,
    framing: FramingConfig,
    ack_timeout: Duration,
    mut report: impl FnMut(&DeadLetter, &str),
) -> io::Result<ReplaySummary> {
    let _lock = super::journal::lock(root)?;
    let (letters, _) = read_all(root)?;
    let mut summary = ReplaySummary::default();
    let mut kept: Vec<&DeadLetter> = Vec::new();
    let mut link: Option<TcpStream> = None;
    for letter in &letters {
        let outcome = send(&mut link, addr, framing, letter, ack_timeout);
        match outcome {
            Ok((code, text)) if code.is_accept() => {
                summary.accepted += 1;
                report(
                    letter,
                    &format!("{}: removed", format!("{code} {text}").trim_end()),
                );
            }
            Ok((code, text)) => {
                summary.kept += 1;
                kept.push(letter);
                report(
                    letter,
                    &format!("{}: kept", format!("{code} {text}").trim_end()),
                );
            }
            Err(e) => {
                link = None;
                summary.kept += 1;
                kept.push(letter);
                report(letter, &format!("not delivered ({e}): kept"));
            }
        }
    }
    for file in files(root)? {
        rewrite(&file, kept.iter().copied().filter(|l| l.file == file))?;
    }
    Ok(summary)
}

/// Sends one message and reads its ACK.
fn send(
    link: &mut Option<TcpStream>,
    addr: SocketAddr,
    framing: FramingConfig,
    letter: &DeadLetter,
    ack_timeout: Duration,
) -> io::Result<(AckCode, String)> {
    let control_id = Msh::parse_lenient(&letter.message)
        .map_err(|e| io::Error::other(format!("no readable MSH: {e}")))?
        .control_id()
        .to_vec();
    if link.is_none() {
        let stream = TcpStream::connect_timeout(&addr, ack_timeout)?;
        stream.set_nodelay(true)?;
        *link = Some(stream);
    }
    let stream = link.as_mut().expect("connected above");
    let mut frame = Vec::with_capacity(letter.message.len() + 3);
    framing
        .encode(&letter.message, &mut frame)
        .map_err(|e| io::Error::other(format!("cannot frame it: {e}")))?;
    stream.write_all(&frame)?;
    let deadline = Instant::now() + ack_timeout;
    let mut deframer = Deframer::new(framing);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(frame) = deframer
            .decode(&buf)
            .map_err(|e| io::Error::other(e.to_string()))?
        {
            let ack =
                parse_ack(frame.payload(&buf)).map_err(|e| io::Error::other(e.to_string()))?;
            if ack.acknowledged_id != control_id.as_slice() {
                *link = None;
                return Err(io::Error::other(
                    "the ACK's MSA-2 is not the message's MSH-10",
                ));
            }
            let answer = (
                ack.code,
                String::from_utf8_lossy(ack.text).trim().to_owned(),
            );
            return Ok(answer);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no ACK in time"));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the receiver closed the connection",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Replaces `file` with the given letters (removed when none), crash-safely: a new file is
/// written and synced, then renamed over the old one, then the directory is synced.
fn rewrite<'a>(file: &Path, letters: impl Iterator<Item = &'a DeadLetter>) -> io::Result<()> {
    let mut bytes = Vec::new();
    for letter in letters {
        record::encode_dead_letter(
            letter.seq,
            letter.time_ms,
            &letter.message,
            &letter.answer,
            &mut bytes,
        );
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    if bytes.is_empty() {
        fs::remove_file(file)?;
    } else {
        let temporary = file.with_extension("log.new");
        let mut out = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&temporary)?;
        out.write_all(&bytes)?;
        out.sync_all()?;
        fs::rename(&temporary, file)?;
    }
    File::open(dir)?.sync_all()
}
