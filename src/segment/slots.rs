//! Attachment slots: how `attach_count` is exact.
//!
//! Every handle write-locks one byte of its own, a *slot* at
//! [`SLOT_BASE`]` + i` (a free one), besides its read lock on byte 0. The
//! kernel drops both when the handle's process dies, and `F_OFD_GETLK` finds
//! each slot held by another open file description — an exact count, which
//! `/proc/locks` (a global list read in pieces while it changes) cannot give.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Ctx;
use crate::error::{Error, ErrorKind};
use crate::sys::{OfdLock, OsResult, ShmFile};

/// First byte of the attachment slots (byte 0 holds the lifetime lock).
pub(super) const SLOT_BASE: u64 = 1;
/// Most handles attached to one segment at once.
const MAX_SLOTS: u64 = 1 << 20;

/// Where this process starts looking for a free slot: just after the slot
/// it took last, so a process that attaches again and again finds a free
/// slot at the first try (the creator's slot is the first one).
static SLOT_HINT: AtomicU64 = AtomicU64::new(SLOT_BASE + 1);

/// Write-locks byte 0 and the first slot in one call, for a creator: no
/// handle can hold a slot of an object that was never published. Returns
/// `Ok(false)` if another description holds a lock there.
pub(super) fn lock_for_creator(file: &ShmFile) -> OsResult<bool> {
    file.lock_range(OfdLock::Write, 0, SLOT_BASE + 1)
}

/// Write-locks a free attachment slot of `file`, so that `attach_count`
/// finds this handle.
pub(super) fn take(cx: Ctx<'_>, file: &ShmFile) -> Result<(), Error> {
    let start = SLOT_HINT
        .load(Ordering::Relaxed)
        .clamp(SLOT_BASE, SLOT_BASE + MAX_SLOTS - 1);
    for i in 0..MAX_SLOTS {
        let slot = SLOT_BASE + (start - SLOT_BASE + i) % MAX_SLOTS;
        if file.lock_range(OfdLock::Write, slot, 1).map_err(|e| cx.os(e))? {
            // Slots free up in any order; wander on, and come back to the
            // first ones after a while.
            let next = if slot + 1 >= SLOT_BASE + 64 {
                SLOT_BASE + 1
            } else {
                slot + 1
            };
            SLOT_HINT.store(next, Ordering::Relaxed);
            return Ok(());
        }
    }
    Err(cx.error(
        ErrorKind::OutOfResources,
        format_args!(" already has {MAX_SLOTS} attachments"),
    ))
}

/// Attachment slots held by other open file descriptions of the file.
pub(crate) fn count_others(file: &ShmFile) -> OsResult<usize> {
    let mut count = 0;
    let mut ranges = vec![(SLOT_BASE, SLOT_BASE + MAX_SLOTS)];
    // Each query finds one lock in a range (any one) or proves it free; the
    // parts on either side of a found lock are searched again.
    while let Some((start, end)) = ranges.pop() {
        if start >= end {
            continue;
        }
        if let Some((at, len)) = file.conflict(start, end - start)? {
            count += 1;
            let at_end = if len == 0 { end } else { at.saturating_add(len) };
            ranges.push((start, at.max(start)));
            ranges.push((at_end.max(start), end));
        }
    }
    Ok(count)
}
