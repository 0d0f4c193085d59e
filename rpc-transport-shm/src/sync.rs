//! What the ring synchronizes with: the standard library's atomics, or in the loom model's test build (`--cfg loom`) the
//! loom model checker's (see the crate docs' Testing section).
//!
//! Both processes reinterpret bytes of a shared mapping as atomics; loom's atomics are objects
//! it creates and tracks itself and cannot live at an address in a byte buffer. So the ring
//! reaches its header words only through [`atomic_u64`] and records its slot copies with
//! [`writing`] and [`reading`]: without loom these are the plain cast and a direct call; under
//! loom the memory supplies a `Shadow` (in `mem`) with a loom atomic per header word and a loom cell per
//! slot (the slot bytes still go through the real memory), so the model runs the ring's own
//! code and loom checks both its wake-ups and that every slot copy is ordered after the one
//! before it.

#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};

#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};

use crate::mem::Memory;
#[cfg(all(test, loom))]
use crate::mem::Shadow;

/// The `u64` at byte `offset` of `mem`, as an atomic shared with the other process.
///
/// # Safety
///
/// `offset + 8 <= mem.len()`, `offset` is 8-aligned (so the address is: `Memory` bases are
/// page-aligned), and every side only ever accesses those 8 bytes as this atomic.
#[cfg(not(all(test, loom)))]
#[inline(always)]
pub(crate) unsafe fn atomic_u64(mem: &dyn Memory, offset: usize) -> &AtomicU64 {
    // SAFETY: in bounds and aligned (the caller's contract), valid for as long as `mem` is
    // borrowed (the `Memory` contract); accessed only atomically, so a shared `&AtomicU64`
    // is sound even while the peer writes it.
    unsafe { &*(mem.base().as_ptr().add(offset) as *const AtomicU64) }
}

/// Runs `copy`, which writes the slot at byte `offset` of `mem`.
#[cfg(not(all(test, loom)))]
#[inline(always)]
pub(crate) fn writing<R>(_mem: &dyn Memory, _offset: usize, copy: impl FnOnce() -> R) -> R {
    copy()
}

/// Runs `copy`, which reads the slot at byte `offset` of `mem`.
#[cfg(not(all(test, loom)))]
#[inline(always)]
pub(crate) fn reading<R>(_mem: &dyn Memory, _offset: usize, copy: impl FnOnce() -> R) -> R {
    copy()
}

/// Under loom: the model's atomic standing for the `u64` at byte `offset` of `mem`.
///
/// # Safety
///
/// None needed under loom (kept `unsafe` so that callers read the same in both builds).
#[cfg(all(test, loom))]
pub(crate) unsafe fn atomic_u64(mem: &dyn Memory, offset: usize) -> &AtomicU64 {
    shadow(mem).word(offset)
}

/// Under loom: runs `copy` as a write access to the slot at byte `offset` (loom fails the
/// model if another thread's access to it is not ordered before this one).
#[cfg(all(test, loom))]
pub(crate) fn writing<R>(mem: &dyn Memory, offset: usize, copy: impl FnOnce() -> R) -> R {
    shadow(mem).cell(offset).with_mut(|_| copy())
}

/// Under loom: runs `copy` as a read access to the slot at byte `offset`.
#[cfg(all(test, loom))]
pub(crate) fn reading<R>(mem: &dyn Memory, offset: usize, copy: impl FnOnce() -> R) -> R {
    shadow(mem).cell(offset).with(|_| copy())
}

#[cfg(all(test, loom))]
fn shadow(mem: &dyn Memory) -> &Shadow {
    mem.loom_shadow()
        .expect("under --cfg loom the ring runs only on memory with a loom Shadow (its model)")
}
