//! The scalar reference engine: the specification every SIMD engine is tested against, and the
//! engine on CPUs without one. Written for obviousness, not speed.

/// Position of the first `needle` in `haystack`.
pub fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// Position of the first byte that is `a` or `b`.
pub fn find_either(haystack: &[u8], a: u8, b: u8) -> Option<usize> {
    haystack.iter().position(|&x| x == a || x == b)
}

/// Position of the first `first` immediately followed by `second`.
pub fn find_pair(haystack: &[u8], first: u8, second: u8) -> Option<usize> {
    haystack
        .windows(2)
        .position(|w| w[0] == first && w[1] == second)
}
