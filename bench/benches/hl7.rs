//! Per-message work of a relay on a 1 KiB ORU^R01: reading the header, building the ACK, both
//! together (the per-message relay cost; the goal is at most 300 ns), walking every level of
//! the message, and escaping text both ways.
//!
//! Ids read `hl7/<operation>/<input bytes>`; throughput is the bytes of the message (of the
//! text for the escape benchmarks).

use std::hint::black_box;

use bench::{escapable_text, oru_message};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mllp::ack::{AckCode, AckParams, parse_ack, write_ack};
use mllp::hl7::{self, Delimiters, Message, Msh};

const MESSAGE_SIZE: usize = 1 << 10;

/// What a relay passes for its ACKs: fixed here, a clock reading and a counter in a driver.
const PARAMS: AckParams<'static> = AckParams {
    timestamp: b"20260115083001.123+0100",
    control_id: b"ACK00000001",
    text: None,
    error: None,
};

fn bytes(len: usize) -> Throughput {
    Throughput::Bytes(u64::try_from(len).expect("a buffer length fits u64"))
}

/// The header fields a relay reads to route a message and log it, read as the relay reads them
/// (leniently: the same view as the strict parser for every header it accepts).
fn read_header(bytes: &[u8]) -> Msh<'_> {
    let msh = Msh::parse_lenient(bytes).expect("the fixture parses");
    black_box(msh.control_id());
    black_box(msh.message_type());
    black_box(msh.version());
    msh
}

/// Sums the lengths of every subcomponent of every component, repetition, field and segment.
fn walk(bytes: &[u8]) -> usize {
    let message = Message::parse(bytes).expect("the fixture parses");
    let mut total = 0;
    for segment in message.segments() {
        for field in segment.fields() {
            for repetition in field.repetitions() {
                for component in repetition.components() {
                    for sub in component.subcomponents() {
                        total += sub.len();
                    }
                }
            }
        }
    }
    total
}

fn hl7(c: &mut Criterion) {
    let message = oru_message(MESSAGE_SIZE, 7);
    let size = message.len();
    let mut group = c.benchmark_group("hl7");
    group.throughput(bytes(size));

    // Sanity checks, once: the fixture reads as expected and the ACK is what a relay sends.
    let msh = read_header(&message);
    assert_eq!(msh.message_type().code, b"ORU");
    let mut ack = Vec::with_capacity(512);
    write_ack(&msh, AckCode::AA, &PARAMS, &mut ack);
    let parsed = parse_ack(&ack).expect("the ACK parses");
    assert_eq!(
        (parsed.code, parsed.acknowledged_id),
        (AckCode::AA, msh.control_id())
    );
    assert!(walk(&message) > size / 2);

    group.bench_with_input(
        BenchmarkId::new("msh_parse", size),
        &message,
        |b, message| {
            b.iter(|| read_header(black_box(message)));
        },
    );

    group.bench_with_input(BenchmarkId::new("ack_build", size), &msh, |b, msh| {
        b.iter(|| {
            ack.clear();
            write_ack(black_box(msh), AckCode::AA, black_box(&PARAMS), &mut ack);
            black_box(ack.len())
        });
    });

    group.bench_with_input(
        BenchmarkId::new("msh_parse_and_ack", size),
        &message,
        |b, message| {
            b.iter(|| {
                let msh = read_header(black_box(message));
                ack.clear();
                write_ack(&msh, AckCode::AA, black_box(&PARAMS), &mut ack);
                black_box(ack.len())
            });
        },
    );

    group.bench_with_input(
        BenchmarkId::new("field_walk", size),
        &message,
        |b, message| {
            b.iter(|| walk(black_box(message)));
        },
    );

    // Escapes: a 1 KiB report text with a delimiter or line break every few dozen bytes.
    let text = escapable_text(MESSAGE_SIZE, 3);
    let delimiters = Delimiters::DEFAULT;
    let mut escaped = Vec::new();
    hl7::encode_escapes(&text, &delimiters, &mut escaped).expect("default delimiters escape");
    let mut out = Vec::with_capacity(2 * escaped.len());
    hl7::decode_escapes(&escaped, &delimiters, &mut out);
    assert_eq!(out, text, "escaping round-trips");

    group.throughput(bytes(escaped.len()));
    group.bench_with_input(
        BenchmarkId::new("escape_decode", escaped.len()),
        &escaped,
        |b, escaped| {
            b.iter(|| {
                out.clear();
                hl7::decode_escapes(black_box(escaped), &delimiters, &mut out);
                black_box(out.len())
            });
        },
    );

    group.throughput(bytes(text.len()));
    group.bench_with_input(
        BenchmarkId::new("escape_encode", text.len()),
        &text,
        |b, text| {
            b.iter(|| {
                out.clear();
                hl7::encode_escapes(black_box(text), &delimiters, &mut out).expect("escapes");
                black_box(out.len())
            });
        },
    );
    group.finish();
}

criterion_group!(benches, hl7);
criterion_main!(benches);
