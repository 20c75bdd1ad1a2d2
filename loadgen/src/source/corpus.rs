//! Corpora: folders and files of HL7 messages as real senders write them (single messages,
//! messages back to back, FHS/BHS batches, MLLP-framed captures), read into [`Message`]s.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::{fs, io};

use mllp::BatchError;
use mllp::batch::{LineEndings, split_batch};
use mllp::frame::{Deframer, FramingConfig, Tolerances, VT};
use mllp::hl7::{normalize_segment_terminators, strip_bom};

use super::{Message, SourceError};

/// How corpus files are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorpusOptions {
    /// Rewrite LF and CRLF segment terminators into CR (HL7's own), with
    /// [`normalize_segment_terminators`]: only where a segment ID follows, so line breaks
    /// inside report text stay. Off: messages are sent with the terminators their files hold,
    /// so the target sees exactly what the files say.
    pub normalize_line_endings: bool,
}

/// Loads every message of a corpus folder, in a deterministic order.
///
/// The folder is walked recursively and its files are read in path order. Skipped: hidden
/// files and folders (names starting with `.`), files named `MANIFEST*`, `README*`,
/// `LICENSE*` or `LICENCE*` (any case) and `*.md` files, which describe a corpus rather than
/// belong to it; symbolic links to folders are not followed. Any other file must hold
/// messages, read as [`load_file`] does (so `.txt` files, common in real corpora, are
/// loaded). A path to a file loads that file.
///
/// # Errors
/// [`SourceError::Io`] when the folder or a file cannot be read,
/// [`SourceError::EmptyCorpus`] when no file is left to read, and the errors of
/// [`load_file`] for the first file that fails.
pub fn load_corpus(dir: &Path, options: CorpusOptions) -> Result<Vec<Message>, SourceError> {
    let metadata = fs::metadata(dir).map_err(io_error(dir))?;
    if !metadata.is_dir() {
        return load_file(dir, options);
    }
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    if files.is_empty() {
        return Err(SourceError::EmptyCorpus {
            path: dir.to_path_buf(),
        });
    }
    files.sort();
    let mut messages = Vec::new();
    for file in &files {
        messages.extend(load_file(file, options)?);
    }
    Ok(messages)
}

/// Loads the messages of one file, which is one of:
///
/// - an MLLP-framed stream (its first byte that is not whitespace is VT): each frame is a
///   message. FS without CR, LF after FS and whitespace between frames are tolerated, as
///   captures and hand-made files have them;
/// - a batch file (`FHS`/`BHS` … `BTS`/`FTS`) or messages back to back, with or without blank
///   lines between them, split at each `MSH` whatever the segment terminators (CR, LF or
///   CRLF), with the counts of BTS-1/FTS-1 checked;
/// - one message.
///
/// A UTF-8 byte order mark and whitespace before the first message are skipped. Each
/// message's [`origin`](Message::origin) is the path, followed by ` #n` (counting from 1)
/// when the file holds more than one.
///
/// # Errors
/// [`SourceError::Io`] when the file cannot be read; [`SourceError::MissingHeader`] when it
/// starts with something else than a message; [`SourceError::Framing`] and
/// [`SourceError::Batch`] (with the byte offset in the file) when its structure is broken;
/// [`SourceError::Header`] when its first header (MSH, FHS or BHS) cannot be read, or when
/// normalisation cannot read a message's; the errors of [`Message::parse`] for a message.
pub fn load_file(path: &Path, options: CorpusOptions) -> Result<Vec<Message>, SourceError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    split_messages(path, &bytes, options)
}

/// The messages of a file's contents; `path` names them.
fn split_messages(
    path: &Path,
    bytes: &[u8],
    options: CorpusOptions,
) -> Result<Vec<Message>, SourceError> {
    let bom = bytes.len() - strip_bom(bytes).len();
    let skipped = bom
        + bytes
            .get(bom..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    let content = bytes.get(skipped..).unwrap_or_default();

    let payloads: Vec<&[u8]> = if content.first() == Some(&VT) {
        deframe_file(path, bytes, bom)?
    } else if [&b"MSH"[..], b"FHS", b"BHS"]
        .iter()
        .any(|id| content.starts_with(id))
    {
        // Split after the skipped prefix: a blank first line would read as a broken header.
        let batch = split_batch(content, LineEndings::CrOrLf).map_err(|error| match error {
            // The first header is unreadable: say so plainly, the file may not be a batch.
            BatchError::Header(cause) => SourceError::Header {
                origin: path.display().to_string(),
                cause,
            },
            error => SourceError::Batch {
                path: path.to_path_buf(),
                cause: shift_batch_error(error, skipped),
            },
        })?;
        batch
            .messages
            .iter()
            .filter_map(|range| content.get(range.clone()))
            .collect()
    } else {
        return Err(SourceError::MissingHeader {
            origin: path.display().to_string(),
        });
    };

    let numbered = payloads.len() > 1;
    let mut messages = Vec::with_capacity(payloads.len());
    for (index, payload) in payloads.into_iter().enumerate() {
        let origin = if numbered {
            format!("{} #{}", path.display(), index + 1)
        } else {
            path.display().to_string()
        };
        let message = if options.normalize_line_endings && payload.starts_with(b"MSH") {
            let mut owned = payload.to_vec();
            if let Err(cause) = normalize_segment_terminators(&mut owned) {
                return Err(SourceError::Header { origin, cause });
            }
            Message::parse(origin, &owned)?
        } else {
            // Without `MSH` normalisation has nothing to work on; `parse` names the problem.
            Message::parse(origin, payload)?
        };
        messages.push(message);
    }
    Ok(messages)
}

/// The frame payloads of an MLLP-framed file, whose byte order mark (if any) is `bom` bytes.
fn deframe_file<'a>(
    path: &Path,
    bytes: &'a [u8],
    bom: usize,
) -> Result<Vec<&'a [u8]>, SourceError> {
    // Deframe the whole file so that error offsets are file offsets; a byte order mark
    // becomes spaces, which the whitespace tolerance skips. Payload ranges are the same in
    // both buffers, since no payload can start before the first VT.
    let masked;
    let stream = if bom > 0 {
        masked = [&b"   "[..bom.min(3)], bytes.get(bom..).unwrap_or_default()].concat();
        &masked[..]
    } else {
        bytes
    };
    let config = FramingConfig::MLLP.with_tolerances(Tolerances {
        fs_without_cr: true,
        lf_after_fs: true,
        whitespace_between_frames: true,
        junk_before_start: false,
    });
    let mut deframer = Deframer::new(config);
    let framing_error = |cause| SourceError::Framing {
        path: path.to_path_buf(),
        cause,
    };
    let mut payloads = Vec::new();
    // Tolerance events are not polled: a file is read once, and its frames are what matters.
    while let Some(frame) = deframer.decode(stream).map_err(framing_error)? {
        payloads.extend(bytes.get(frame.range));
    }
    deframer.finish().map_err(framing_error)?;
    Ok(payloads)
}

/// `error` with its file offset moved `by` bytes later: for errors found in a slice that
/// starts `by` bytes into the file.
fn shift_batch_error(error: BatchError, by: usize) -> BatchError {
    match error {
        BatchError::UnexpectedSegment { segment, offset } => BatchError::UnexpectedSegment {
            segment,
            offset: offset + by,
        },
        BatchError::BatchCountMismatch {
            declared,
            found,
            offset,
        } => BatchError::BatchCountMismatch {
            declared,
            found,
            offset: offset + by,
        },
        BatchError::FileCountMismatch {
            declared,
            found,
            offset,
        } => BatchError::FileCountMismatch {
            declared,
            found,
            offset: offset + by,
        },
        BatchError::BadCount { offset } => BatchError::BadCount {
            offset: offset + by,
        },
        other => other,
    }
}

/// Adds the message files under `dir`, recursively, to `files` (unsorted).
fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let name = entry.file_name();
        if is_hidden(&name) {
            continue;
        }
        // `file_type` does not follow symbolic links: a link to a folder is not walked (no
        // loops), a link to a file is read like the file.
        let file_type = entry.file_type().map_err(io_error(&path))?;
        if file_type.is_dir() {
            collect_files(&path, files)?;
        } else if !is_description(&name) {
            let is_file = file_type.is_file()
                || (file_type.is_symlink() && fs::metadata(&path).is_ok_and(|m| m.is_file()));
            if is_file {
                files.push(path);
            }
        }
    }
    Ok(())
}

/// Hidden files and folders: `.git`, editor swap files, `.DS_Store`.
fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".")
}

/// Files that describe a corpus: its manifest, read-me, licence, Markdown notes. Real corpora
/// often name their messages `*.txt`, so text files are not in this list.
fn is_description(name: &OsStr) -> bool {
    let name = name.to_string_lossy().to_ascii_uppercase();
    ["MANIFEST", "README", "LICENSE", "LICENCE"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || name.ends_with(".MD")
}

/// Maps an I/O error to [`SourceError::Io`] for `path`.
fn io_error(path: &Path) -> impl Fn(io::Error) -> SourceError + '_ {
    move |cause| SourceError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mllp::FrameError;
    use mllp::hl7::Msh;

    use super::*;
    use crate::source::test_util::{TS, assert_round_trip, assert_same_except_stamps, stamped};
    use crate::source::{RunTag, control_id, parse_control_id};
    use testkit::TempDir;

    const M1: &[u8] = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1\r";
    const M2: &[u8] = b"MSH|^~\\&|A|B|C|D|20240102||ADT^A08|2|P|2.5\rPID|2\rNK1|1\r";

    fn origins(messages: &[Message]) -> Vec<&str> {
        messages.iter().map(Message::origin).collect()
    }

    #[test]
    fn single_message_file() {
        let dir = TempDir::new("corpus-single");
        let path = dir.write("one.hl7", M1);
        let messages = load_file(&path, CorpusOptions::default()).unwrap();
        assert_eq!(origins(&messages), [path.display().to_string()]);
        assert_round_trip(&messages[0], M1);
    }

    #[test]
    fn file_without_msh_is_an_error_naming_it() {
        let dir = TempDir::new("corpus-nomsh");
        for (name, bytes) in [
            ("notes.hl7", &b"PID|1\rMSH|^~\\&\r"[..]),
            ("empty.hl7", b""),
            ("blank.hl7", b"\r\n \r\n"),
            ("text.txt", b"just some words"),
        ] {
            let path = dir.write(name, bytes);
            let error = load_file(&path, CorpusOptions::default()).unwrap_err();
            assert!(
                matches!(error, SourceError::MissingHeader { .. }),
                "{name}: {error:?}"
            );
            assert_eq!(
                error.to_string(),
                format!("{}: no MSH segment at the start", path.display())
            );
        }
        let missing = dir.path().join("missing.hl7");
        let error = load_file(&missing, CorpusOptions::default()).unwrap_err();
        assert!(matches!(error, SourceError::Io { .. }));
        assert!(
            error
                .to_string()
                .starts_with(&missing.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn lf_file_is_split_with_and_without_normalisation() {
        let file = b"\xEF\xBB\xBF\nMSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\nPID|1\nOBX|1|TX|||line 1\nline 2\n\nMSH|^~\\&|A|B|C|D|20240102||ADT^A08|2|P|2.5\r\nPID|2\r\n";
        let dir = TempDir::new("corpus-lf");
        let path = dir.write("lf.txt", file);
        let shown = path.display().to_string();

        let raw = load_file(&path, CorpusOptions::default()).unwrap();
        assert_eq!(
            origins(&raw),
            [format!("{shown} #1"), format!("{shown} #2")]
        );
        let first =
            b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\nPID|1\nOBX|1|TX|||line 1\nline 2\n";
        let second = b"MSH|^~\\&|A|B|C|D|20240102||ADT^A08|2|P|2.5\r\nPID|2\r\n";
        assert_round_trip(&raw[0], first);
        assert_round_trip(&raw[1], second);
        assert!(
            raw[0]
                .bytes()
                .ends_with(b"|P|2.5\nPID|1\nOBX|1|TX|||line 1\nline 2\n")
        );

        let options = CorpusOptions {
            normalize_line_endings: true,
        };
        let normalized = load_file(&path, options).unwrap();
        assert_eq!(normalized.len(), 2);
        // Segment terminators become CR; the line break inside OBX-5 stays.
        assert!(
            normalized[0]
                .bytes()
                .ends_with(b"|P|2.5\rPID|1\rOBX|1|TX|||line 1\nline 2\r")
        );
        assert!(normalized[1].bytes().ends_with(b"|P|2.5\rPID|2\r"));
        assert_round_trip(
            &normalized[1],
            b"MSH|^~\\&|A|B|C|D|20240102||ADT^A08|2|P|2.5\rPID|2\r",
        );
    }

    #[test]
    fn framed_file() {
        let mut file = b" \r\n".to_vec();
        for (message, trailer) in [(M1, &b"\x1c\r\n"[..]), (M2, b"\x1c\r"), (M1, b"\x1c")] {
            file.push(VT);
            file.extend_from_slice(message);
            file.extend_from_slice(trailer);
        }
        let dir = TempDir::new("corpus-framed");
        let path = dir.write("capture.mllp", &file);
        let messages = load_file(&path, CorpusOptions::default()).unwrap();
        assert_eq!(messages.len(), 3);
        assert!(messages[1].origin().ends_with("capture.mllp #2"));
        for (message, original) in messages.iter().zip([M1, M2, M1]) {
            assert_round_trip(message, original);
        }

        // A byte order mark before the first frame is skipped; offsets stay file offsets.
        let with_bom = [&b"\xEF\xBB\xBF"[..], &file].concat();
        let path = dir.write("bom.mllp", &with_bom);
        assert_eq!(load_file(&path, CorpusOptions::default()).unwrap().len(), 3);
        let mut broken = with_bom;
        let second_vt = 6 + 1 + M1.len() + 3;
        assert_eq!(broken[second_vt], VT);
        broken[second_vt - 3] = b'x'; // the first frame's FS
        let path = dir.write("broken.mllp", &broken);
        let error = load_file(&path, CorpusOptions::default()).unwrap_err();
        assert!(
            matches!(
                error,
                SourceError::Framing { cause: FrameError::StartInsideFrame { offset, .. }, .. }
                    if offset == u64::try_from(second_vt).unwrap()
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().contains(&format!("offset {second_vt}")),
            "{error}"
        );
        assert!(error.to_string().starts_with(&path.display().to_string()));

        let path = dir.write("truncated.mllp", &file[..file.len() - 1]);
        let error = load_file(&path, CorpusOptions::default()).unwrap_err();
        assert!(matches!(
            error,
            SourceError::Framing {
                cause: FrameError::Truncated { .. },
                ..
            }
        ));

        let path = dir.write("empty-frame.mllp", b"\x0b\x1c\r");
        let error = load_file(&path, CorpusOptions::default()).unwrap_err();
        assert!(
            matches!(error, SourceError::MissingHeader { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn batch_file() {
        let file = [
            &b"FHS|^~\\&|LAB\rBHS|^~\\&|LAB\r"[..],
            M1,
            M2,
            b"BTS|2\rBHS|^~\\&|LAB\r",
            M1,
            b"BTS|1\rFTS|2\r",
        ]
        .concat();
        let dir = TempDir::new("corpus-batch");
        let path = dir.write("batch.hl7", &file);
        let messages = load_file(&path, CorpusOptions::default()).unwrap();
        assert_eq!(messages.len(), 3);
        for (message, original) in messages.iter().zip([M1, M2, M1]) {
            assert_round_trip(message, original);
        }
        assert!(messages[2].origin().ends_with("batch.hl7 #3"));

        // A wrong count is an error with its offset in the file, blank lines at the top counted.
        let wrong = [&b"\r\n"[..], b"BHS|^~\\&\r", M1, b"BTS|3\r"].concat();
        let path = dir.write("wrong.hl7", &wrong);
        let error = load_file(&path, CorpusOptions::default()).unwrap_err();
        let offset = 2 + 9 + M1.len();
        assert!(
            matches!(
                error,
                SourceError::Batch { cause: BatchError::BatchCountMismatch { declared: 3, found: 1, offset: o }, .. }
                    if o == offset
            ),
            "{error:?}"
        );
        assert!(
            error.to_string().starts_with(&path.display().to_string()),
            "{error}"
        );

        let path = dir.write("headers-only.hl7", b"FHS|^~\\&\rFTS|0\r");
        let error = load_file(&path, CorpusOptions::default()).unwrap_err();
        assert!(matches!(
            error,
            SourceError::Batch {
                cause: BatchError::Empty,
                ..
            }
        ));
    }

    #[test]
    fn corpus_folder_is_walked_in_order() {
        let dir = TempDir::new("corpus-corpus");
        dir.write("b.hl7", M2);
        dir.write("a.hl7", M1);
        dir.write("sub/deeper/c.txt", M1);
        dir.write("sub/b.hl7", [M1, M2].concat());
        dir.write(".hidden.hl7", b"not a message");
        dir.write(".git/objects/x", b"not a message");
        dir.write("README.md", b"# not a message");
        dir.write("MANIFEST", b"not a message");
        dir.write("sub/LICENSE.txt", b"not a message");
        dir.write("sub/notes.MD", b"not a message");
        let messages = load_corpus(dir.path(), CorpusOptions::default()).unwrap();
        let root = dir.path().display().to_string();
        assert_eq!(
            origins(&messages),
            [
                format!("{root}/a.hl7"),
                format!("{root}/b.hl7"),
                format!("{root}/sub/b.hl7 #1"),
                format!("{root}/sub/b.hl7 #2"),
                format!("{root}/sub/deeper/c.txt"),
            ]
        );
        // A file path loads that file.
        let single = load_corpus(&dir.join("b.hl7"), CorpusOptions::default()).unwrap();
        assert_eq!(origins(&single), [format!("{root}/b.hl7")]);

        // One bad file fails the corpus, naming the file.
        dir.write("sub/zz.hl7", b"garbage");
        let error = load_corpus(dir.path(), CorpusOptions::default()).unwrap_err();
        assert!(error.to_string().contains("zz.hl7"), "{error}");

        let empty = TempDir::new("corpus-empty");
        empty.write("README", b"nothing here");
        empty.write(".keep", b"");
        let error = load_corpus(empty.path(), CorpusOptions::default()).unwrap_err();
        assert!(
            matches!(error, SourceError::EmptyCorpus { .. }),
            "{error:?}"
        );
        let error = load_corpus(&empty.join("nope"), CorpusOptions::default()).unwrap_err();
        assert!(matches!(error, SourceError::Io { .. }), "{error:?}");
    }

    /// The shared corpus: `MLLP_CORPUS_DIR`, or `shared/corpus` beside the workspace.
    fn shared_corpus() -> Option<PathBuf> {
        let dir = std::env::var_os("MLLP_CORPUS_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"),
            PathBuf::from,
        );
        dir.canonicalize().ok().filter(|dir| dir.is_dir())
    }

    /// What `MANIFEST.md` says of each file: whether it is meant to be broken (MALFORMED, NOT
    /// A MESSAGE) and how many messages it holds (`(×13)`), by file path relative to the
    /// corpus.
    fn manifest(dir: &Path) -> BTreeMap<String, (bool, usize)> {
        let text = fs::read_to_string(dir.join("MANIFEST.md")).unwrap_or_default();
        let mut files = BTreeMap::new();
        for line in text.lines().filter(|line| line.starts_with("| `")) {
            let Some(name) = line[3..].split('`').next() else {
                continue;
            };
            let broken = line.contains("MALFORMED") || line.contains("NOT A MESSAGE");
            let count = line
                .split_once("(×")
                .and_then(|(_, rest)| rest.split(')').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            files.insert(name.to_owned(), (broken, count));
        }
        files
    }

    #[test]
    fn every_file_of_the_shared_corpus_loads() {
        let Some(dir) = shared_corpus() else {
            eprintln!("shared corpus not found (set MLLP_CORPUS_DIR): skipped");
            return;
        };
        let manifest = manifest(&dir);
        let mut files = Vec::new();
        collect_files(&dir, &mut files).unwrap();
        files.sort();
        let run = RunTag::new(2026);
        // Files and messages loaded, of files the manifest calls sound / broken.
        let (mut sound, mut broken_loaded) = ((0, 0), (0, 0));
        let mut broken_refused = BTreeMap::new();
        for (i, path) in files.iter().enumerate() {
            let relative = path
                .strip_prefix(&dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let (broken, expected) = manifest.get(&relative).copied().unwrap_or((false, 1));
            for normalize_line_endings in [false, true] {
                let options = CorpusOptions {
                    normalize_line_endings,
                };
                let messages = match load_file(path, options) {
                    Ok(messages) => messages,
                    Err(error) if broken => {
                        broken_refused.insert(relative.clone(), error.to_string());
                        continue;
                    }
                    Err(error) => panic!("{error}"),
                };
                if !broken {
                    assert_eq!(messages.len(), expected, "{relative}");
                }
                if !normalize_line_endings {
                    let count = if broken {
                        &mut broken_loaded
                    } else {
                        &mut sound
                    };
                    count.0 += 1;
                    count.1 += messages.len();
                }
                for (seq, message) in messages.iter().enumerate() {
                    let id =
                        control_id(run, u32::try_from(i).unwrap(), u64::try_from(seq).unwrap());
                    let sent = stamped(message, &id, TS);
                    let msh = Msh::parse_lenient(&sent)
                        .unwrap_or_else(|e| panic!("{}: {e}", message.origin()));
                    assert_eq!(msh.control_id(), id, "{}", message.origin());
                    assert_eq!(msh.raw_field(7), TS, "{}", message.origin());
                    assert_eq!(
                        parse_control_id(run, msh.control_id()),
                        Some((u32::try_from(i).unwrap(), u64::try_from(seq).unwrap()))
                    );
                    assert_same_except_stamps(message.bytes(), &sent);
                }
            }
        }
        eprintln!(
            "shared corpus {}: {} files; {} sound files loaded with {} messages; of the files \
             the manifest calls broken, {} loaded with {} messages and {} were refused:",
            dir.display(),
            files.len(),
            sound.0,
            sound.1,
            broken_loaded.0,
            broken_loaded.1,
            broken_refused.len()
        );
        for error in broken_refused.values() {
            eprintln!("  {error}");
        }
        let broken = manifest.values().filter(|(broken, _)| *broken).count();
        assert_eq!(sound.0, files.len() - broken, "every sound file loads");
        assert_eq!(broken_loaded.0 + broken_refused.len(), broken);
    }
}
