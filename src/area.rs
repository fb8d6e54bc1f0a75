//! The description area: the bytes of the header page after the fixed
//! header, where a creator stores the user's key and the encoded layout of
//! the element type, so that tools can find and decode a segment without
//! the program that made it. Attach never reads it: the fingerprint in the
//! header already decides whether a program may use the segment.
//!
//! | offset | field | |
//! |---|---|---|
//! | 576 | `key_len: u32` | bytes of the key (1..=255) |
//! | 580 | `layout_len: u32` | bytes of the encoded layout; 0 when omitted |
//! | 584 | `flags: u32` | bit 0: the layout was omitted because it does not fit |
//! | 588 | reserved | zero |
//! | 592 | key | UTF-8, `key_len` bytes |
//! | 592 + `key_len` | layout | `layout_len` bytes, the encoding of [`crate::layout`] |
//!
//! The integers are little-endian. Everything must end before `data_offset`
//! (the page size): a layout that does not fit in the rest of the header
//! page is not stored, and bit 0 of `flags` says so — the segment works as
//! any other, and tools show its one-line description (in the header) instead
//! of decoding its fields. It takes a struct of roughly 150 fields or more.

use crate::header::HEADER_SIZE;
use crate::layout::{self, DecodeError, Layout, TypeLayout};

/// Where the area starts: right after the fixed header.
pub(crate) const AREA_OFFSET: usize = HEADER_SIZE;
/// Bytes of the area's own head (lengths and flags).
const HEAD: usize = 16;
/// `flags` bit 0: the layout did not fit and was omitted.
const FLAG_LAYOUT_OMITTED: u32 = 1;

/// The area for `key` and `layout`, at most `room` bytes long (the bytes
/// between the header and the data).
pub(crate) fn encode(key: &str, layout: &TypeLayout, room: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(room.min(4096));
    let mut encoded = layout.encode();
    let mut flags = 0;
    if HEAD + key.len() + encoded.len() > room {
        encoded.clear();
        flags |= FLAG_LAYOUT_OMITTED;
    }
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&encoded);
    // A key longer than the room (never: keys are at most 255 bytes and a
    // page at least 4096) is not stored at all.
    if out.len() > room {
        out.clear();
    }
    out
}

/// What a segment's area says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Described {
    /// The key the creator was given.
    pub key: String,
    /// The element type's layout, `None` if it was omitted (too large).
    pub layout: Option<Layout>,
}

/// Why an area was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AreaError {
    /// No key stored (an area of zeros, or too short).
    Empty,
    /// Lengths that overrun the area, a key that is not UTF-8.
    Bad(&'static str),
    /// The layout bytes do not decode.
    Layout(DecodeError),
}

impl std::fmt::Display for AreaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AreaError::Empty => f.write_str("it stores no key"),
            AreaError::Bad(what) => f.write_str(what),
            AreaError::Layout(e) => write!(f, "{e}"),
        }
    }
}

/// Reads an area: `bytes` are the bytes from [`AREA_OFFSET`] up to the
/// data. Pure: every length is checked against `bytes`; never panics.
pub(crate) fn decode(bytes: &[u8]) -> Result<Described, AreaError> {
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok()
    };
    let (Some(key_len), Some(layout_len), Some(flags)) = (word(0), word(4), word(8)) else {
        return Err(AreaError::Empty);
    };
    if key_len == 0 {
        return Err(AreaError::Empty);
    }
    if key_len > 255 {
        return Err(AreaError::Bad("its key is longer than 255 bytes"));
    }
    let key_end = HEAD + key_len;
    let layout_end = key_end
        .checked_add(layout_len)
        .ok_or(AreaError::Bad("its lengths overflow"))?;
    let Some(key) = bytes.get(HEAD..key_end) else {
        return Err(AreaError::Bad("its key runs past the header page"));
    };
    let key = std::str::from_utf8(key).map_err(|_| AreaError::Bad("its key is not UTF-8"))?;
    let Some(encoded) = bytes.get(key_end..layout_end) else {
        return Err(AreaError::Bad("its layout runs past the header page"));
    };
    let layout = if flags & FLAG_LAYOUT_OMITTED as usize != 0 {
        None
    } else {
        Some(layout::decode(encoded).map_err(AreaError::Layout)?)
    };
    Ok(Described {
        key: key.to_owned(),
        layout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShmSafe;
    use proptest::prelude::*;

    #[test]
    fn key_and_layout_round_trip() {
        let bytes = encode("telemetry", <[f32; 8]>::LAYOUT, 4096 - AREA_OFFSET);
        assert_eq!(&bytes[..4], &9u32.to_le_bytes());
        let d = decode(&bytes).unwrap();
        assert_eq!(d.key, "telemetry");
        assert_eq!(d.layout, Some(Layout::from(<[f32; 8]>::LAYOUT)));
        // Trailing zeros (the rest of the page) do not matter.
        let mut page = bytes.clone();
        page.resize(4096 - AREA_OFFSET, 0);
        assert_eq!(decode(&page).unwrap(), d);
    }

    #[test]
    fn a_layout_that_does_not_fit_is_omitted_and_marked() {
        let bytes = encode("k", <[u64; 4]>::LAYOUT, HEAD + 5);
        assert_eq!(bytes.len(), HEAD + 1);
        let d = decode(&bytes).unwrap();
        assert_eq!((d.key.as_str(), d.layout), ("k", None));
    }

    #[test]
    fn bad_areas_are_refused() {
        assert_eq!(decode(&[]), Err(AreaError::Empty));
        assert_eq!(decode(&[0; 64]), Err(AreaError::Empty));
        let good = encode("key", u32::LAYOUT, 1000);
        assert!(matches!(decode(&good[..good.len() - 1]), Err(AreaError::Bad(_))));
        let mut long_key = good.clone();
        long_key[0] = 0xff;
        long_key[1] = 0xff;
        assert!(matches!(decode(&long_key), Err(AreaError::Bad(_))));
        let mut overflow = good.clone();
        overflow[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&overflow), Err(AreaError::Bad(_))));
        let mut not_utf8 = good.clone();
        not_utf8[HEAD] = 0xff;
        assert!(matches!(decode(&not_utf8), Err(AreaError::Bad(_))));
        let mut bad_layout = good;
        bad_layout[HEAD + 3] = 9;
        assert!(matches!(decode(&bad_layout), Err(AreaError::Layout(_))));
    }

    proptest! {
        #[test]
        fn random_areas_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), small in 0u32..40) {
            let mut b = bytes;
            if b.len() >= 8 {
                // Plausible lengths now and then, so the parser gets past them.
                b[0..4].copy_from_slice(&small.to_le_bytes());
                b[4..8].copy_from_slice(&(small / 2).to_le_bytes());
            }
            let _ = decode(&b);
        }
    }
}
