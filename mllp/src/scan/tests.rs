//! Seed cases for every engine against the scalar reference. The exhaustive length × alignment
//! sweep and the random-buffer properties live in the `proptests` crate.

use super::{Engine, Scanner, scalar};

fn engines() -> Vec<Scanner> {
    Engine::ALL
        .into_iter()
        .filter_map(Scanner::with_engine)
        .collect()
}

#[test]
fn detect_picks_an_available_engine() {
    assert!(Engine::detect().is_available());
    assert!(Engine::Scalar.is_available());
    #[cfg(target_arch = "x86_64")]
    assert!(Engine::Sse2.is_available());
}

#[test]
fn names_round_trip() {
    for e in Engine::ALL {
        assert_eq!(Engine::from_name(e.name()), Some(e));
    }
    assert_eq!(Engine::from_name("neon"), None);
}

#[test]
fn seeds_match_reference() {
    // (haystack, needle a, needle b) with hits at vector edges, in tails, and none at all.
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        b"\x1c".to_vec(),
        b"\x1c\r".to_vec(),
        b"MSH|^~\\&|\x1c\r".to_vec(),
        b"\x0bMSH|^~\\&|LAB|".to_vec(),
    ];
    for len in [15usize, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200] {
        for pos in [0, 1, len / 2, len.saturating_sub(2), len - 1] {
            let mut v = vec![b'x'; len];
            v[pos] = 0x1c;
            if pos + 1 < len {
                v[pos + 1] = b'\r';
            }
            cases.push(v.clone());
            v[pos] = 0x0b;
            cases.push(v);
        }
        cases.push(vec![b'x'; len]);
        // Many first bytes without the second: find_pair must not stop at them.
        let mut v = vec![0x1c; len];
        v[len - 1] = b'\r';
        cases.push(v);
    }
    for scanner in engines() {
        for hay in &cases {
            assert_eq!(
                scanner.find_byte(hay, 0x1c),
                scalar::find_byte(hay, 0x1c),
                "{:?} find_byte {hay:?}",
                scanner.engine()
            );
            assert_eq!(
                scanner.find_either(hay, 0x0b, 0x1c),
                scalar::find_either(hay, 0x0b, 0x1c),
                "{:?} find_either {hay:?}",
                scanner.engine()
            );
            assert_eq!(
                scanner.find_pair(hay, 0x1c, b'\r'),
                scalar::find_pair(hay, 0x1c, b'\r'),
                "{:?} find_pair {hay:?}",
                scanner.engine()
            );
        }
    }
}

#[test]
fn reference_semantics() {
    assert_eq!(scalar::find_pair(b"a\x1c\x1c\r", 0x1c, b'\r'), Some(2));
    assert_eq!(scalar::find_pair(b"\x1c", 0x1c, b'\r'), None);
    assert_eq!(scalar::find_either(b"ab\x0b\x1c", 0x1c, 0x0b), Some(2));
    assert_eq!(scalar::find_byte(b"", 0), None);
}
