//! Framing-byte search: every scan engine this CPU can run, next to the `memchr` crate as a
//! yardstick, on HL7-like text whose only match is at the very end.
//!
//! Ids read `scan_either/<engine>/<bytes>` and `scan_pair/<engine>/<bytes>`, with `memchr2`
//! and `memmem` as the yardstick "engines", so `scan_pair/avx2/65536` sits next to
//! `scan_pair/memmem/65536`.

use std::hint::black_box;

use bench::haystack;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mllp::frame::{CR, FS, VT};
use mllp::scan::{Engine, Scanner};

/// 64 B (a tiny ACK), 1 KiB (a typical ADT), 64 KiB and 1 MiB (results with documents).
const SIZES: [usize; 4] = [64, 1 << 10, 64 << 10, 1 << 20];

/// The engines this CPU can run, scalar first.
fn engines() -> Vec<(Engine, Scanner)> {
    Engine::ALL
        .into_iter()
        .filter_map(|engine| Scanner::with_engine(engine).map(|scanner| (engine, scanner)))
        .collect()
}

fn bytes(len: usize) -> Throughput {
    Throughput::Bytes(u64::try_from(len).expect("a buffer length fits u64"))
}

fn scan_either(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan_either");
    for size in SIZES {
        let hay = haystack(size, 1);
        let expected = Some(size - 2);
        group.throughput(bytes(size));
        for (engine, scanner) in engines() {
            assert_eq!(scanner.find_either(&hay, VT, FS), expected, "{engine:?}");
            group.bench_with_input(BenchmarkId::new(engine.name(), size), &hay, |b, hay| {
                b.iter(|| scanner.find_either(black_box(hay), black_box(VT), black_box(FS)));
            });
        }
        assert_eq!(memchr::memchr2(VT, FS, &hay), expected);
        group.bench_with_input(BenchmarkId::new("memchr2", size), &hay, |b, hay| {
            b.iter(|| memchr::memchr2(black_box(VT), black_box(FS), black_box(hay)));
        });
    }
    group.finish();
}

fn scan_pair(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan_pair");
    // Built once: a memmem searcher precomputes its tables, as a long-lived driver would.
    let finder = memchr::memmem::Finder::new(&[FS, CR]);
    for size in SIZES {
        let hay = haystack(size, 2);
        let expected = Some(size - 2);
        group.throughput(bytes(size));
        for (engine, scanner) in engines() {
            assert_eq!(scanner.find_pair(&hay, FS, CR), expected, "{engine:?}");
            group.bench_with_input(BenchmarkId::new(engine.name(), size), &hay, |b, hay| {
                b.iter(|| scanner.find_pair(black_box(hay), black_box(FS), black_box(CR)));
            });
        }
        assert_eq!(finder.find(&hay), expected);
        group.bench_with_input(BenchmarkId::new("memmem", size), &hay, |b, hay| {
            b.iter(|| finder.find(black_box(hay)));
        });
    }
    group.finish();
}

criterion_group!(benches, scan_either, scan_pair);
criterion_main!(benches);
