//! The lenient header reader (`Msh::parse_lenient`) agrees with the strict one wherever the
//! strict one accepts, refuses only what has no usable MSH-1, and reads every field of a header
//! whose MSH-2 was mangled exactly as the same header with a clean MSH-2.

use mllp::Hl7Error;
use mllp::hl7::Msh;
use proptest::prelude::*;

/// Every field the two views hold, MSH-1 to MSH-30 (absent reads as `None`).
fn fields<'a>(msh: &Msh<'a>) -> Vec<Option<&'a [u8]>> {
    (1..=30)
        .map(|n| msh.field(n).map(|f| f.as_bytes()))
        .collect()
}

/// A byte the strict reader refuses in MSH-2: a letter, digit, space, control or non-ASCII.
fn unusable_byte() -> impl Strategy<Value = u8> {
    any::<u8>().prop_filter("not a delimiter byte", |b| {
        (!b.is_ascii_graphic() || b.is_ascii_alphanumeric()) && !matches!(b, b'\r' | b'\n')
    })
}

proptest! {
    #![proptest_config(proptests::config(512))]

    #[test]
    fn prop_lenient_reads_whatever_strict_accepts_identically(
        data in proptests::biased_bytes(120),
        model in proptests::message(),
        use_model in any::<bool>(),
    ) {
        let bytes = if use_model { model.render() } else { [b"MSH".as_slice(), &data].concat() };
        let lenient = Msh::parse_lenient(&bytes);
        match Msh::parse(&bytes) {
            Ok(strict) => {
                let lenient = lenient.expect("lenient accepts what strict accepts");
                prop_assert_eq!(lenient.event(), None);
                prop_assert_eq!(lenient.delimiters(), strict.delimiters());
                prop_assert_eq!(lenient.as_bytes(), strict.as_bytes());
                prop_assert_eq!(fields(&lenient), fields(&strict));
            }
            // Without a header or a usable MSH-1 neither reader can find a field.
            Err(error @ (Hl7Error::MissingHeader
                | Hl7Error::TruncatedHeader
                | Hl7Error::InvalidFieldSeparator { .. })) => {
                prop_assert_eq!(lenient.err(), Some(error));
            }
            // Everything else the strict reader refuses is in MSH-2, which the lenient one
            // reads past and names.
            Err(_) => {
                let lenient = lenient.expect("lenient reads past MSH-2");
                prop_assert!(lenient.event().is_some());
            }
        }
    }

    #[test]
    fn prop_a_mangled_msh2_reads_like_the_clean_one(
        model in proptests::message(),
        inserts in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<bool>(), unusable_byte()),
            1..4,
        ),
    ) {
        let clean = model.render();
        let encoding: Vec<u8> = model.delimiters.encoding_characters().collect();
        // Insert bytes the lenient reader must skip: a second copy of one of MSH-2's own
        // delimiters (after its first), or a byte that cannot be a delimiter (anywhere).
        let mut mangled_msh2 = encoding.clone();
        for (which, at, repeat, unusable) in &inserts {
            let (byte, from) = if *repeat {
                let byte = *which.get(&encoding);
                let first = mangled_msh2.iter().position(|&b| b == byte).unwrap();
                (byte, first + 1)
            } else {
                (*unusable, 0)
            };
            let to = from + at.index(mangled_msh2.len() + 1 - from);
            mangled_msh2.insert(to, byte);
        }
        let mangled = [&clean[..4], &mangled_msh2, &clean[4 + encoding.len()..]].concat();

        let strict = Msh::parse(&clean).unwrap();
        let lenient = Msh::parse_lenient(&mangled).unwrap();
        prop_assert!(Msh::parse(&mangled).is_err());
        prop_assert!(lenient.event().is_some());
        prop_assert_eq!(lenient.delimiters(), model.delimiters);
        prop_assert_eq!(lenient.encoding_characters(), &mangled_msh2[..]);
        let mut expected = fields(&strict);
        expected[1] = Some(&mangled_msh2[..]);
        prop_assert_eq!(fields(&lenient), expected);
        prop_assert_eq!(lenient.control_id(), &model.msh_field(10)[..]);
    }
}
