//! Every SIMD engine answers exactly as the scalar reference.

use mllp::scan::{Engine, Scanner, scalar};
use proptest::prelude::*;

fn engines() -> Vec<Scanner> {
    Engine::ALL
        .into_iter()
        .filter_map(Scanner::with_engine)
        .collect()
}

fn check_all(scanners: &[Scanner], hay: &[u8]) {
    let expected = (
        scalar::find_byte(hay, 0x0B),
        scalar::find_either(hay, 0x0B, 0x1C),
        scalar::find_pair(hay, 0x1C, b'\r'),
    );
    for s in scanners {
        let got = (
            s.find_byte(hay, 0x0B),
            s.find_either(hay, 0x0B, 0x1C),
            s.find_pair(hay, 0x1C, b'\r'),
        );
        assert_eq!(got, expected, "{:?} on {} bytes", s.engine(), hay.len());
    }
}

/// Every length 0..=300 at every alignment 0..64, with the needle at every position (and
/// nowhere), a decoy before it for the pair search, and a second needle after it.
#[test]
fn prop_scan_engines_match_reference_every_length_and_alignment() {
    let scanners = engines();
    let mut buf = vec![b'x'; 64 + 300 + 2];
    for len in 0..=300usize {
        for align in 0..64usize {
            let region = align..align + len;
            buf[region.clone()].fill(b'x');
            check_all(&scanners, &buf[region.clone()]);
            for pos in 0..len {
                let hay = &mut buf[region.clone()];
                hay[pos] = 0x1C;
                if pos + 1 < len {
                    hay[pos + 1] = b'\r';
                }
                if pos + 3 < len {
                    hay[pos + 3] = 0x0B;
                }
                check_all(&scanners, hay);
                hay[pos] = 0x0B;
                check_all(&scanners, hay);
                hay[pos] = b'x';
                if pos + 1 < len {
                    hay[pos + 1] = b'x';
                }
                if pos + 3 < len {
                    hay[pos + 3] = b'x';
                }
            }
        }
    }
}

/// All matches of a search, found by restarting after each one.
fn all_matches(hay: &[u8], find: impl Fn(&[u8]) -> Option<usize>) -> Vec<usize> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(k) = find(&hay[from..]) {
        out.push(from + k);
        from += k + 1;
    }
    out
}

/// A 1 MiB buffer where each byte is VT, FS or CR with probability `1/density` (else
/// printable text), from a fast PRNG seeded by proptest.
fn biased_megabyte(seed: u64, density: u32) -> Vec<u8> {
    let mut rng = mllp::rand::XorShift::new(seed);
    (0..1 << 20)
        .map(|_| {
            let r = (rng.next_u64() >> 32) as u32;
            if r.is_multiple_of(density) {
                [0x0B, 0x1C, b'\r'][(r / density % 3) as usize]
            } else {
                b'A' + (r % 26) as u8
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(proptests::config(6))]

    #[test]
    fn prop_scan_engines_match_reference_on_1mib(
        seed in any::<u64>(),
        density in prop::sample::select(vec![4u32, 64, 4096, 1 << 20]),
    ) {
        let hay = biased_megabyte(seed, density);
        let expected_either = all_matches(&hay, |h| scalar::find_either(h, 0x0B, 0x1C));
        let expected_pair = all_matches(&hay, |h| scalar::find_pair(h, 0x1C, b'\r'));
        let expected_byte = all_matches(&hay, |h| scalar::find_byte(h, b'\r'));
        for s in engines() {
            prop_assert_eq!(&all_matches(&hay, |h| s.find_either(h, 0x0B, 0x1C)), &expected_either);
            prop_assert_eq!(&all_matches(&hay, |h| s.find_pair(h, 0x1C, b'\r')), &expected_pair);
            prop_assert_eq!(&all_matches(&hay, |h| s.find_byte(h, b'\r')), &expected_byte);
        }
    }

    #[test]
    fn prop_scan_engines_match_reference_on_biased_bytes(
        hay in proptests::biased_bytes(700),
        a in proptests::biased_byte(),
        b in proptests::biased_byte(),
    ) {
        for s in engines() {
            prop_assert_eq!(s.find_byte(&hay, a), scalar::find_byte(&hay, a));
            prop_assert_eq!(s.find_either(&hay, a, b), scalar::find_either(&hay, a, b));
            prop_assert_eq!(s.find_pair(&hay, a, b), scalar::find_pair(&hay, a, b));
        }
    }
}
