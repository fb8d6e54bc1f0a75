//! Waiting for a name to appear in `/dev/shm`, woken by the kernel
//! (inotify(7)) instead of polling.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use super::call::{Call, OsError, OsResult};

/// A watch on `/dev/shm` for names created or moved in.
pub(crate) struct DirWatch {
    fd: OwnedFd,
}

impl DirWatch {
    /// Starts watching `/dev/shm`. Set it up *before* looking for the name,
    /// so that a creation in between is not missed.
    pub(crate) fn dev_shm() -> OsResult<DirWatch> {
        // SAFETY: inotify_init1(2) takes flags only.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if raw < 0 {
            return Err(OsError::last(Call::Inotify));
        }
        // SAFETY: OwnedFd::from_raw_fd requires an open fd that nothing else
        // owns: inotify_init1 just returned it to us.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let dir: &CStr = c"/dev/shm";
        // SAFETY: inotify_add_watch(2) requires an inotify fd (above) and a
        // NUL-terminated path (a C string literal).
        let wd = unsafe {
            libc::inotify_add_watch(fd.as_raw_fd(), dir.as_ptr(), libc::IN_CREATE | libc::IN_MOVED_TO)
        };
        if wd < 0 {
            return Err(OsError::last(Call::Inotify));
        }
        Ok(DirWatch { fd })
    }

    /// Waits until an entry named `name` (without the leading `/`) is
    /// created in `/dev/shm`, or `deadline` passes. Returns whether it was.
    pub(crate) fn wait_for(&self, name: &str, deadline: Instant) -> OsResult<bool> {
        // Room for many events; each is a header plus a NUL-padded name.
        let mut buf = [0u64; 512];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: poll(2) requires a valid array of `nfds` pollfd
            // structures: one, on the stack.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = OsError::last(Call::Inotify);
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                continue;
            }
            // SAFETY: read(2) requires a buffer valid for writes of the
            // given length: `buf`, 4096 bytes (8-aligned, as inotify_event
            // needs).
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), size_of_val(&buf)) };
            if n < 0 {
                let e = OsError::last(Call::Inotify);
                if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
                    continue;
                }
                return Err(e);
            }
            let bytes: &[u8] = bytemuck::cast_slice(&buf[..]);
            if events_name(&bytes[..n as usize], name) {
                return Ok(true);
            }
        }
    }
}

/// Whether the inotify events in `bytes` (as `read` returned them) name
/// `name`. Pure: parses `struct inotify_event { int wd; u32 mask, cookie,
/// len; char name[len]; }` records, bounds-checked.
fn events_name(bytes: &[u8], name: &str) -> bool {
    const HEAD: usize = 16;
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + HEAD) {
        let len = u32::from_ne_bytes([head[12], head[13], head[14], head[15]]) as usize;
        let Some(raw) = bytes.get(at + HEAD..at + HEAD + len) else {
            return false;
        };
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        if &raw[..end] == name.as_bytes() {
            return true;
        }
        at += HEAD + len;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, pad: usize) -> Vec<u8> {
        let mut e = vec![0u8; 16];
        let len = (name.len() + 1 + pad) as u32;
        e[12..16].copy_from_slice(&len.to_ne_bytes());
        e.extend_from_slice(name.as_bytes());
        e.resize(16 + len as usize, 0);
        e
    }

    #[test]
    fn events_are_parsed_and_bounds_checked() {
        let mut bytes = event("other", 2);
        bytes.extend(event("tshm_k", 1));
        assert!(events_name(&bytes, "tshm_k"));
        assert!(!events_name(&bytes, "tshm_"));
        assert!(!events_name(&bytes[..bytes.len() - 3], "tshm_k"), "a cut record");
        assert!(!events_name(&[], "x"));
        let mut lying = event("x", 0);
        lying[12..16].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(!events_name(&lying, "x"));
    }
}
