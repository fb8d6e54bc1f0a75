//! Keys and the OS names derived from them.
//!
//! A key is any UTF-8 string of 1 to 255 bytes without a NUL byte. The OS
//! object's name (the *native key*, what `/dev/shm` shows) is derived from it
//! deterministically, so programs in other languages can compute it:
//!
//! - a key of at most 24 bytes made only of `A-Z a-z 0-9 . _ -` becomes
//!   `/tshm_<key>`;
//! - any other key becomes `/tshm_<prefix>~<hash>`, where `<prefix>` is the
//!   key's first 7 characters with every character outside that set replaced
//!   by `_` (fewer when the key is shorter), and `<hash>` is the 64-bit FNV-1a
//!   hash of the key's UTF-8 bytes as 16 lowercase hexadecimal digits.
//!
//! Both forms are at most 30 bytes long (the shortest limit among the
//! platforms this crate may support), and they cannot collide: `~` never
//! appears in the first form.

use crate::error::{Error, ErrorKind};

/// Longest key accepted, in bytes.
pub(crate) const MAX_KEY_LEN: usize = 255;
const PREFIX: &str = "/tshm_";
const PLAIN_MAX: usize = 24;
const READABLE_MAX: usize = 7;

fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Checks `key` and returns its native name.
///
/// # Errors
///
/// [`ErrorKind::KeyError`] for an empty key, a key with NUL, or a key longer
/// than [`MAX_KEY_LEN`] bytes.
pub(crate) fn native_key(key: &str) -> Result<String, Error> {
    if key.is_empty() {
        return Err(Error::new(
            ErrorKind::KeyError,
            "the key is empty: give every segment a non-empty name",
        ));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::new(
            ErrorKind::KeyError,
            format!(
                "the key is {} bytes long; keys are at most {MAX_KEY_LEN} bytes",
                key.len()
            ),
        ));
    }
    if key.contains('\0') {
        return Err(Error::new(
            ErrorKind::KeyError,
            format!("the key {key:?} contains a NUL byte, which OS names cannot hold"),
        ));
    }
    if key.len() <= PLAIN_MAX && key.chars().all(is_plain) {
        return Ok(format!("{PREFIX}{key}"));
    }
    let readable: String = key
        .chars()
        .take(READABLE_MAX)
        .map(|c| if is_plain(c) { c } else { '_' })
        .collect();
    Ok(format!("{PREFIX}{readable}~{:016x}", fnv1a(key.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plain_keys_are_readable() {
        assert_eq!(native_key("telemetry").unwrap(), "/tshm_telemetry");
        assert_eq!(native_key("a.b_c-9").unwrap(), "/tshm_a.b_c-9");
        assert_eq!(
            native_key("abcdefghijklmnopqrstuvwx").unwrap(),
            "/tshm_abcdefghijklmnopqrstuvwx"
        );
    }

    #[test]
    fn other_keys_are_hashed_with_a_readable_prefix() {
        // Golden values: the naming scheme is part of the on-disk contract.
        assert_eq!(
            native_key("abcdefghijklmnopqrstuvwxy").unwrap(),
            "/tshm_abcdefg~1c2ce16aeda40dac"
        );
        assert_eq!(native_key("my app/ü").unwrap(), "/tshm_my_app_~71b9a9ec86a1b31a");
        assert_eq!(native_key("/").unwrap(), "/tshm__~af63a24c860189fe");
    }

    #[test]
    fn native_keys_fit_in_30_bytes() {
        for key in [
            "x",
            "abcdefghijklmnopqrstuvwx",
            &"é".repeat(100),
            &"k".repeat(255),
        ] {
            let n = native_key(key).unwrap();
            assert!(n.len() <= 30, "{n:?} is {} bytes", n.len());
            assert!(n.starts_with('/') && !n[1..].contains('/'), "{n:?}");
        }
    }

    #[test]
    fn bad_keys_are_key_errors() {
        for key in ["", "a\0b", &"k".repeat(256)] {
            assert_eq!(
                native_key(key).unwrap_err().kind(),
                ErrorKind::KeyError,
                "{key:?}"
            );
        }
        assert!(native_key(&"k".repeat(255)).is_ok());
    }

    #[test]
    fn hashed_and_plain_forms_differ() {
        // A plain key can never contain '~', so it cannot spell a hashed name.
        let hashed = native_key("with space").unwrap();
        assert!(hashed.contains('~'));
        assert!(native_key("with~tilde").unwrap().contains('~'));
        assert_ne!(native_key("with~tilde").unwrap(), "/tshm_with~tilde");
    }
}
