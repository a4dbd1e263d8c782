//! Lower-case hexadecimal, the one encoding hush shows bytes in (admin tokens and their
//! hashes, purge run ids).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lower-case hex, two digits per byte.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// 32 bytes from exactly 64 hex digits (either case), or `None`.
pub fn decode_32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_known_bytes() {
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn round_trips_32_bytes_and_refuses_the_rest() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 8) as u8);
        assert_eq!(decode_32(&encode(&bytes)), Some(bytes));
        assert_eq!(decode_32(&encode(&bytes).to_uppercase()), Some(bytes));
        assert_eq!(decode_32("zz"), None);
        assert_eq!(decode_32(&"g".repeat(64)), None);
        assert_eq!(decode_32(&"a".repeat(63)), None);
        // A multi-byte character must not be taken for two digits.
        assert_eq!(decode_32(&format!("é{}", "a".repeat(62))), None);
    }
}
