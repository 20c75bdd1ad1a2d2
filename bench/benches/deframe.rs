//! The streaming deframer over a stream of MLLP-framed ORU messages.
//!
//! Two shapes of traffic, each decoded two ways:
//! - `whole`: the stream in one buffer, every frame decoded from it (the deframer's best case:
//!   one scan, no copies);
//! - `chunks<N>`: the realistic driver loop: append an `N`-byte read to a reused buffer, decode
//!   every complete frame, repeat (`reserve_for_read` moves the partial frame to the front
//!   only when the buffer is full). 1460 bytes is one TCP segment's payload on
//!   Ethernet (small messages); 64 KiB is a large socket read (big messages).
//!
//! Each runs with the best engine of this CPU and with the scalar reference. Ids read
//! `deframe/<mode>-<engine>/<count>x<message size>`; throughput is stream bytes.

use std::hint::black_box;

use bench::{framed_stream, oru_message};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mllp::frame::{Deframer, FramingConfig};
use mllp::scan::{Engine, Scanner};

/// One workload: `count` ORU messages of `size` bytes, read `chunk` bytes at a time.
struct Workload {
    label: &'static str,
    count: usize,
    size: usize,
    chunk: usize,
}

const WORKLOADS: [Workload; 2] = [
    Workload {
        label: "1024x1KiB",
        count: 1024,
        size: 1 << 10,
        chunk: 1460,
    },
    Workload {
        label: "8x1MiB",
        count: 8,
        size: 1 << 20,
        chunk: 64 << 10,
    },
];

/// Decodes every frame of `stream` held in one buffer; returns the frame count.
fn decode_whole(scanner: Scanner, stream: &[u8]) -> u64 {
    let mut deframer = Deframer::with_scanner(FramingConfig::MLLP, scanner);
    let mut frames = 0;
    while let Some(frame) = deframer
        .decode(stream)
        .expect("the fixture stream is valid")
    {
        black_box(frame.range);
        frames += 1;
    }
    deframer.finish().expect("no partial frame at the end");
    frames
}

/// Feeds `stream` into `buf` `chunk` bytes at a time, making room before each read and decoding
/// after it, like a driver does; returns the frame count. `buf` is cleared first and reused, so its
/// capacity survives from one iteration to the next, as a connection's buffer does.
fn decode_chunked(scanner: Scanner, stream: &[u8], chunk: usize, buf: &mut Vec<u8>) -> u64 {
    buf.clear();
    let mut deframer = Deframer::with_scanner(FramingConfig::MLLP, scanner);
    let mut frames = 0;
    for read in stream.chunks(chunk) {
        deframer.reserve_for_read(buf, read.len());
        buf.extend_from_slice(read);
        while let Some(frame) = deframer.decode(buf).expect("the fixture stream is valid") {
            black_box(frame.range);
            frames += 1;
        }
    }
    deframer.finish().expect("no partial frame at the end");
    frames
}

fn deframe(c: &mut Criterion) {
    let best = Scanner::new();
    let mut scanners = vec![best];
    if best.engine() != Engine::Scalar {
        scanners.extend(Scanner::with_engine(Engine::Scalar));
    }

    let mut group = c.benchmark_group("deframe");
    for workload in &WORKLOADS {
        let seeds = 0..u64::try_from(workload.count).expect("count fits u64");
        let messages: Vec<Vec<u8>> = seeds.map(|seed| oru_message(workload.size, seed)).collect();
        let stream = framed_stream(&messages);
        let expected = u64::try_from(workload.count).expect("count fits u64");
        // A connection's read buffer: 64 KiB, grown by the deframer only for bigger frames.
        let mut buf = Vec::with_capacity(64 << 10);
        group.throughput(Throughput::Bytes(
            u64::try_from(stream.len()).expect("fits u64"),
        ));

        for &scanner in &scanners {
            let engine = scanner.engine().name();
            assert_eq!(decode_whole(scanner, &stream), expected);
            assert_eq!(
                decode_chunked(scanner, &stream, workload.chunk, &mut buf),
                expected
            );

            let id = BenchmarkId::new(format!("whole-{engine}"), workload.label);
            group.bench_with_input(id, &stream, |b, stream| {
                b.iter(|| decode_whole(scanner, black_box(stream)));
            });
            let id = BenchmarkId::new(format!("chunks{}-{engine}", workload.chunk), workload.label);
            group.bench_with_input(id, &stream, |b, stream| {
                b.iter(|| decode_chunked(scanner, black_box(stream), workload.chunk, &mut buf));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, deframe);
criterion_main!(benches);
