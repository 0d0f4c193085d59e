//! A single-producer/single-consumer ring of fixed-size descriptors in shared memory.
//!
//! Layout at the ring's offset (all 64-byte aligned, each index and flag on its own cache
//! line so the two processes never write the same line):
//!
//! | offset | field | written by |
//! |---|---|---|
//! | 0 | magic, capacity (informational) | producer, at creation |
//! | 64 | head: descriptors pushed (u64, Release) | producer |
//! | 128 | tail: descriptors popped (u64, Release) | consumer |
//! | 192 | consumer parked: wake me with the eventfd | consumer sets, producer clears |
//! | 256 | producer waiting: the ring was full | producer sets, consumer clears |
//! | 320 | `capacity` slots of [`SLOT`] bytes | producer |
//!
//! Each side keeps its own index privately and only *reads* the other's from shared memory,
//! so a peer that scribbles over the header can make us see a bogus index, never write out of
//! bounds: every index read is checked (`head - tail` within `0..=capacity`) and a bad one is
//! [`RingError::Corrupt`], which ends the session.
//!
//! Wakeups are the Dekker pattern with sequentially consistent fences: the consumer stores
//! `parked = 1`, fences, re-reads `head`, and sleeps only if still empty; the producer stores
//! `head`, fences, and writes the eventfd only if it then sees `parked == 1` (clearing it).
//! One of the two always sees the other's store, so a wakeup is never lost.

use std::sync::Arc;

use crate::mem::Memory;
use crate::sync::{self, fence, AtomicU64, Ordering};

/// Bytes per descriptor slot (two cache lines).
pub const SLOT: usize = 128;
/// Bytes of a ring's header before its slots.
pub const HEADER: usize = 320;
/// Largest frame carried inline in a descriptor.
pub const INLINE_MAX: usize = SLOT - 8;
/// Arena offsets one release descriptor returns at most.
pub const RELEASE_MAX: usize = (SLOT - 8) / 4;

const OFF_HEAD: usize = 64;
const OFF_TAIL: usize = 128;
const OFF_PARKED: usize = 192;
const OFF_WAITING: usize = 256;
const MAGIC: u64 = u64::from_le_bytes(*b"RPCRING1");

const KIND_INLINE: u8 = 1;
const KIND_ARENA: u8 = 2;
const KIND_RELEASE: u8 = 3;
const KIND_FALLBACK: u8 = 4;

/// Bytes a ring of `cap` slots takes.
pub const fn ring_bytes(cap: usize) -> usize {
    HEADER + cap * SLOT
}

/// What went wrong with a ring or a descriptor the peer wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The layout does not fit the memory (a local bug or a bad negotiated size).
    #[error("ring of {cap} slots at offset {offset} does not fit {len} bytes (or is not a power of two / aligned)")]
    Layout {
        /// Requested capacity.
        cap: usize,
        /// Requested offset.
        offset: usize,
        /// Memory length.
        len: usize,
    },
    /// The peer's index is impossible (it moved backwards or past the capacity).
    #[error("ring corrupt: head {head}, tail {tail}, capacity {cap}")]
    Corrupt {
        /// Head seen.
        head: u64,
        /// Tail seen.
        tail: u64,
        /// Capacity.
        cap: u64,
    },
    /// A descriptor the peer wrote is malformed.
    #[error("bad descriptor: {0}")]
    BadDescriptor(&'static str),
}

/// One descriptor, as copied out of (or into) a slot.
#[derive(Clone, Copy)]
pub struct Slot(pub [u8; SLOT]);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Slot").field(&self.decode()).finish()
    }
}

/// A decoded descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desc<'a> {
    /// A whole frame inline.
    Inline(&'a [u8]),
    /// A whole frame in the producer's arena at `offset`, `len` bytes (the block the producer
    /// allocated starts at `offset`; the consumer returns it with a release).
    Arena {
        /// Offset in the producer's arena.
        offset: u32,
        /// Frame length.
        len: u32,
    },
    /// Blocks of the *consumer's* arena that the producer is done with (little-endian u32
    /// offsets).
    Release(&'a [u8]),
    /// The next frame, `len` bytes, travels over the socket (too large for the arena).
    Fallback {
        /// Frame length.
        len: u32,
    },
}

impl Slot {
    fn header(kind: u8, count: u8, len: u32) -> Slot {
        let mut s = [0u8; SLOT];
        s[0] = kind;
        s[1] = count;
        s[4..8].copy_from_slice(&len.to_le_bytes());
        Slot(s)
    }

    /// A frame inline; `None` if it is longer than [`INLINE_MAX`].
    pub fn inline(frame: &[u8]) -> Option<Slot> {
        let len = u32::try_from(frame.len()).ok()?;
        let mut s = Slot::header(KIND_INLINE, 0, len);
        s.0.get_mut(8..8 + frame.len())?.copy_from_slice(frame);
        Some(s)
    }

    /// An inline slot whose `len` frame bytes the caller writes into [`Slot::inline_mut`].
    pub fn inline_empty(len: usize) -> Option<Slot> {
        (len <= INLINE_MAX).then(|| Slot::header(KIND_INLINE, 0, len as u32))
    }

    /// The frame bytes of an inline slot made by [`Slot::inline_empty`].
    pub fn inline_mut(&mut self) -> &mut [u8] {
        let len = u32::from_le_bytes([self.0[4], self.0[5], self.0[6], self.0[7]]) as usize;
        &mut self.0[8..8 + len.min(INLINE_MAX)]
    }

    /// A frame in the arena.
    pub fn arena(offset: u32, len: u32) -> Slot {
        let mut s = Slot::header(KIND_ARENA, 0, len);
        s.0[8..12].copy_from_slice(&offset.to_le_bytes());
        s
    }

    /// Returns up to [`RELEASE_MAX`] blocks of the peer's arena; the rest of `offsets` is left
    /// for the next slot. Returns the slot and how many it took.
    pub fn release(offsets: &[u32]) -> (Slot, usize) {
        let n = offsets.len().min(RELEASE_MAX);
        let mut s = Slot::header(KIND_RELEASE, n as u8, 0);
        for (i, o) in offsets[..n].iter().enumerate() {
            s.0[8 + 4 * i..12 + 4 * i].copy_from_slice(&o.to_le_bytes());
        }
        (s, n)
    }

    /// The next frame comes over the socket.
    pub fn fallback(len: u32) -> Slot {
        Slot::header(KIND_FALLBACK, 0, len)
    }

    /// Decodes a descriptor; anything malformed is an error (never a panic).
    pub fn decode(&self) -> Result<Desc<'_>, RingError> {
        let s = &self.0;
        let len = u32::from_le_bytes([s[4], s[5], s[6], s[7]]);
        match s[0] {
            KIND_INLINE => {
                let len = len as usize;
                if len > INLINE_MAX {
                    return Err(RingError::BadDescriptor("inline length over the slot"));
                }
                Ok(Desc::Inline(&s[8..8 + len]))
            }
            KIND_ARENA => Ok(Desc::Arena {
                offset: u32::from_le_bytes([s[8], s[9], s[10], s[11]]),
                len,
            }),
            KIND_RELEASE => {
                let n = usize::from(s[1]);
                if n > RELEASE_MAX {
                    return Err(RingError::BadDescriptor("release count over the slot"));
                }
                Ok(Desc::Release(&s[8..8 + 4 * n]))
            }
            KIND_FALLBACK => Ok(Desc::Fallback { len }),
            _ => Err(RingError::BadDescriptor("unknown descriptor kind")),
        }
    }
}

/// Where the frame of a [`Desc::Arena`] lies in the producer's arena of `arena_len` bytes:
/// `offset..offset + len`, or an error when it is empty or reaches past the arena (a peer's
/// descriptor is never trusted; the reader slices the peer's region with this range). Not
/// API: public for the fuzz targets only (`crate::fuzzing`).
#[doc(hidden)]
pub fn arena_span(
    offset: u32,
    len: u32,
    arena_len: usize,
) -> Result<std::ops::Range<usize>, RingError> {
    let start = offset as usize;
    match start.checked_add(len as usize) {
        Some(end) if len > 0 && end <= arena_len => Ok(start..end),
        _ => Err(RingError::BadDescriptor(
            "arena frame outside the peer's arena",
        )),
    }
}

/// The offsets of a [`Desc::Release`].
pub fn release_offsets(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// A ring's place in a memory block; shared by its producer and consumer handles.
struct Ring {
    mem: Arc<dyn Memory>,
    offset: usize,
    cap: u64,
}

// The ring only reaches its memory through `Memory`'s contract (valid, aligned, alive while
// `mem` is); `Ring` holds no raw pointer of its own, so it is Send + Sync through `Arc<dyn
// Memory>`.
impl Ring {
    fn new(mem: Arc<dyn Memory>, offset: usize, cap: usize) -> Result<Ring, RingError> {
        let bad = || RingError::Layout {
            cap,
            offset,
            len: mem.len(),
        };
        if cap == 0 || !cap.is_power_of_two() || offset % 64 != 0 {
            return Err(bad());
        }
        let end = cap
            .checked_mul(SLOT)
            .and_then(|b| b.checked_add(HEADER))
            .and_then(|b| b.checked_add(offset))
            .ok_or_else(bad)?;
        if end > mem.len() {
            return Err(bad());
        }
        Ok(Ring {
            mem,
            offset,
            cap: cap as u64,
        })
    }

    fn atomic(&self, field: usize) -> &AtomicU64 {
        debug_assert!(field + 8 <= HEADER && field % 8 == 0);
        // SAFETY: `offset + field + 8 <= offset + HEADER <= mem.len()` (checked in `new`), the
        // address is 8-aligned (page-aligned base, `offset % 64 == 0`, `field % 8 == 0`), the
        // memory lives as long as `self.mem` (Memory contract) and is only ever accessed as
        // this atomic by both sides, so a shared `&AtomicU64` is sound.
        unsafe { sync::atomic_u64(&*self.mem, self.offset + field) }
    }

    /// The byte offset in `mem` of the slot for `index`.
    fn slot_offset(&self, index: u64) -> usize {
        let i = (index & (self.cap - 1)) as usize;
        self.offset + HEADER + i * SLOT
    }

    fn slot_ptr(&self, index: u64) -> *mut u8 {
        // SAFETY: the slot index is below `cap`, so `offset + HEADER + i * SLOT + SLOT <=
        // mem.len()` (checked in `new`); the pointer stays inside the allocation.
        unsafe { self.mem.base().as_ptr().add(self.slot_offset(index)) }
    }
}

/// Writes the header of a fresh ring (the producer side, at creation).
pub fn init(mem: &Arc<dyn Memory>, offset: usize, cap: usize) -> Result<(), RingError> {
    let ring = Ring::new(mem.clone(), offset, cap)?;
    ring.atomic(0).store(MAGIC, Ordering::Relaxed);
    ring.atomic(8).store(cap as u64, Ordering::Relaxed);
    for f in [OFF_HEAD, OFF_TAIL, OFF_PARKED, OFF_WAITING] {
        ring.atomic(f).store(0, Ordering::Relaxed);
    }
    fence(Ordering::SeqCst);
    Ok(())
}

/// The writing end of a ring. Not `Sync`: one owner pushes (the link keeps it under a lock).
pub struct Producer {
    ring: Ring,
    head: u64,
    tail_seen: u64,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("head", &self.head)
            .field("tail_seen", &self.tail_seen)
            .field("cap", &self.ring.cap)
            .finish()
    }
}

impl Producer {
    /// The producer of the ring at `offset` of `mem` (initialized with [`init`]).
    pub fn new(mem: Arc<dyn Memory>, offset: usize, cap: usize) -> Result<Producer, RingError> {
        Ok(Producer {
            ring: Ring::new(mem, offset, cap)?,
            head: 0,
            tail_seen: 0,
        })
    }

    fn refresh(&mut self) -> Result<(), RingError> {
        let tail = self.ring.atomic(OFF_TAIL).load(Ordering::Acquire);
        if tail < self.tail_seen || tail > self.head {
            return Err(RingError::Corrupt {
                head: self.head,
                tail,
                cap: self.ring.cap,
            });
        }
        self.tail_seen = tail;
        Ok(())
    }

    /// Free slots now (re-reading the consumer's index).
    pub fn free(&mut self) -> Result<u64, RingError> {
        self.refresh()?;
        Ok(self.ring.cap - (self.head - self.tail_seen))
    }

    /// Whether a push would succeed now.
    pub fn has_space(&mut self) -> Result<bool, RingError> {
        if self.head - self.tail_seen < self.ring.cap {
            return Ok(true);
        }
        self.refresh()?;
        Ok(self.head - self.tail_seen < self.ring.cap)
    }

    /// Pushes one descriptor; `Ok(false)` if the ring is full.
    pub fn push(&mut self, slot: &Slot) -> Result<bool, RingError> {
        if !self.has_space()? {
            return Ok(false);
        }
        let dst = self.ring.slot_ptr(self.head);
        // SAFETY: `dst` points at a slot of SLOT bytes inside the ring (`slot_ptr`); the slot
        // is free (head - tail < cap), so the consumer does not read it until we publish it
        // with the Release store below; `slot` is a distinct local value.
        let copy = || unsafe { std::ptr::copy_nonoverlapping(slot.0.as_ptr(), dst, SLOT) };
        sync::writing(&*self.ring.mem, self.ring.slot_offset(self.head), copy);
        self.head += 1;
        self.ring
            .atomic(OFF_HEAD)
            .store(self.head, Ordering::Release);
        Ok(true)
    }

    /// After pushing: whether the consumer is parked and must be woken (clears its flag; the
    /// caller then writes the eventfd).
    pub fn take_parked(&self) -> bool {
        fence(Ordering::SeqCst);
        let parked = self.ring.atomic(OFF_PARKED);
        parked.load(Ordering::Relaxed) != 0 && parked.swap(0, Ordering::AcqRel) != 0
    }

    /// The ring is full and the caller will wait: ask the consumer to wake us when it pops.
    /// Returns whether space appeared meanwhile (then do not wait).
    pub fn set_waiting(&mut self) -> Result<bool, RingError> {
        // A swap, not a store: see `Consumer::park`.
        self.ring.atomic(OFF_WAITING).swap(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.has_space()
    }

    /// Descriptors pushed and not yet popped (as last seen).
    pub fn in_flight(&self) -> u64 {
        self.head - self.tail_seen
    }

    /// The capacity in slots.
    pub fn capacity(&self) -> u64 {
        self.ring.cap
    }
}

/// The reading end of a ring: one task pops.
pub struct Consumer {
    ring: Ring,
    tail: u64,
    head_seen: u64,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("tail", &self.tail)
            .field("head_seen", &self.head_seen)
            .finish()
    }
}

impl Consumer {
    /// The consumer of the ring at `offset` of `mem`.
    pub fn new(mem: Arc<dyn Memory>, offset: usize, cap: usize) -> Result<Consumer, RingError> {
        Ok(Consumer {
            ring: Ring::new(mem, offset, cap)?,
            tail: 0,
            head_seen: 0,
        })
    }

    fn refresh(&mut self) -> Result<(), RingError> {
        let head = self.ring.atomic(OFF_HEAD).load(Ordering::Acquire);
        if head < self.head_seen || head - self.tail > self.ring.cap {
            return Err(RingError::Corrupt {
                head,
                tail: self.tail,
                cap: self.ring.cap,
            });
        }
        self.head_seen = head;
        Ok(())
    }

    /// Whether nothing is waiting (re-reading the producer's index).
    pub fn is_empty(&mut self) -> Result<bool, RingError> {
        if self.tail < self.head_seen {
            return Ok(false);
        }
        self.refresh()?;
        Ok(self.tail == self.head_seen)
    }

    /// Pops one descriptor (copied out of shared memory, so the producer may reuse the slot
    /// and a peer scribbling on it cannot change what we decode).
    pub fn pop(&mut self) -> Result<Option<Slot>, RingError> {
        if self.is_empty()? {
            return Ok(None);
        }
        let src = self.ring.slot_ptr(self.tail);
        let mut slot = Slot([0; SLOT]);
        // SAFETY: `src` points at a slot of SLOT bytes inside the ring; the producer published
        // it with a Release store of `head` that our Acquire load saw, and does not reuse it
        // until we advance `tail` below. A hostile peer writing it anyway races only on plain
        // bytes we copy into a local buffer and validate afterwards.
        let copy = || unsafe { std::ptr::copy_nonoverlapping(src, slot.0.as_mut_ptr(), SLOT) };
        sync::reading(&*self.ring.mem, self.ring.slot_offset(self.tail), copy);
        self.tail += 1;
        self.ring
            .atomic(OFF_TAIL)
            .store(self.tail, Ordering::Release);
        Ok(Some(slot))
    }

    /// After popping: whether the producer waits for space (clears its flag; the caller then
    /// writes the producer's eventfd).
    pub fn take_waiting(&self) -> bool {
        fence(Ordering::SeqCst);
        let w = self.ring.atomic(OFF_WAITING);
        w.load(Ordering::Relaxed) != 0 && w.swap(0, Ordering::AcqRel) != 0
    }

    /// Whether this ring's consumer (us) is parked now.
    pub fn peek_parked(&self) -> bool {
        fence(Ordering::SeqCst);
        self.ring.atomic(OFF_PARKED).load(Ordering::Relaxed) != 0
    }

    /// About to sleep: sets the parked flag and re-checks. Returns `true` when the ring is
    /// still empty (sleep; the producer will write the eventfd), `false` when something
    /// arrived meanwhile (the flag is cleared again; do not sleep).
    pub fn park(&mut self) -> Result<bool, RingError> {
        // A swap, not a store (here, in `unpark` and in `Producer::set_waiting`): every write
        // of a flag that the other side clears with a swap is then a read-modify-write too, so
        // a flag's writes form one chain, as they do in the memory model. Loom orders a plain
        // store racing with a swap only partially (loom issue 254) and would see a lost
        // wake-up where there is none. One locked instruction, on the way to sleep.
        self.ring.atomic(OFF_PARKED).swap(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.is_empty()? {
            Ok(true)
        } else {
            self.unpark();
            Ok(false)
        }
    }

    /// Awake again (after the eventfd fired or a spurious wake).
    pub fn unpark(&self) {
        self.ring.atomic(OFF_PARKED).swap(0, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::mem::HeapMemory;
    use proptest::prelude::*;

    fn pair(cap: usize) -> (Producer, Consumer, Arc<dyn Memory>) {
        let mem: Arc<dyn Memory> = Arc::new(HeapMemory::new(ring_bytes(cap)));
        init(&mem, 0, cap).unwrap();
        (
            Producer::new(mem.clone(), 0, cap).unwrap(),
            Consumer::new(mem.clone(), 0, cap).unwrap(),
            mem,
        )
    }

    #[test]
    fn fills_up_and_drains_in_order() {
        let (mut p, mut c, _m) = pair(4);
        for i in 0..4u32 {
            assert!(p.push(&Slot::arena(i, i + 1)).unwrap());
        }
        assert!(!p.push(&Slot::fallback(9)).unwrap(), "full");
        for i in 0..4u32 {
            let s = c.pop().unwrap().unwrap();
            assert_eq!(
                s.decode().unwrap(),
                Desc::Arena {
                    offset: i,
                    len: i + 1
                }
            );
        }
        assert!(c.pop().unwrap().is_none());
        assert!(p.push(&Slot::fallback(9)).unwrap(), "space again");
    }

    #[test]
    fn layouts_that_do_not_fit_are_refused() {
        let mem: Arc<dyn Memory> = Arc::new(HeapMemory::new(4096));
        assert!(
            Producer::new(mem.clone(), 0, 3).is_err(),
            "not a power of two"
        );
        assert!(Producer::new(mem.clone(), 8, 2).is_err(), "unaligned");
        assert!(Producer::new(mem.clone(), 0, 1 << 20).is_err(), "too big");
        assert!(Producer::new(mem, usize::MAX - 63, 2).is_err(), "overflow");
    }

    #[test]
    fn a_peer_that_scribbles_on_the_indices_is_caught() {
        let (mut p, mut c, mem) = pair(4);
        let base = mem.base().as_ptr();
        // The "peer" (consumer side) writes a tail beyond our head.
        // SAFETY: test: field inside the ring header, aligned.
        unsafe { (*(base.add(OFF_TAIL) as *const AtomicU64)).store(99, Ordering::Relaxed) };
        for _ in 0..4 {
            let _ = p.push(&Slot::fallback(1));
        }
        assert!(matches!(
            p.push(&Slot::fallback(1)),
            Err(RingError::Corrupt { .. })
        ));
        // A head far beyond the capacity.
        // SAFETY: test: as above.
        unsafe { (*(base.add(OFF_HEAD) as *const AtomicU64)).store(1000, Ordering::Relaxed) };
        assert!(matches!(c.pop(), Err(RingError::Corrupt { .. })));
    }

    #[test]
    fn parking_and_waking_hand_off() {
        let (mut p, mut c, _m) = pair(2);
        assert!(c.park().unwrap(), "empty: sleep");
        p.push(&Slot::fallback(1)).unwrap();
        assert!(p.take_parked(), "consumer was parked: wake it");
        assert!(!p.take_parked(), "flag cleared");
        c.unpark();
        assert!(!c.park().unwrap(), "not empty: do not sleep");
        p.push(&Slot::fallback(2)).unwrap();
        assert!(!p.push(&Slot::fallback(3)).unwrap());
        assert!(!p.set_waiting().unwrap(), "still full");
        c.pop().unwrap();
        assert!(c.take_waiting(), "producer waited: wake it");
        assert!(!c.take_waiting());
    }

    #[test]
    fn bad_descriptors_are_errors_not_panics() {
        let mut s = Slot([0xff; SLOT]);
        assert!(s.decode().is_err());
        s.0[0] = KIND_INLINE;
        assert!(s.decode().is_err(), "inline length 0xffffffff");
        s.0[0] = KIND_RELEASE;
        assert!(s.decode().is_err(), "release count 255");
    }

    proptest! {
        #[test]
        #[cfg_attr(miri, ignore = "proptest takes minutes per case under miri; the unit tests run the same unsafe code")]
        fn any_slot_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), SLOT)) {
            let mut s = [0u8; SLOT];
            s.copy_from_slice(&bytes);
            let _ = Slot(s).decode();
        }

        #[test]
        #[cfg_attr(miri, ignore = "proptest takes minutes per case under miri; the unit tests run the same unsafe code")]
        fn descriptors_round_trip(frame in proptest::collection::vec(any::<u8>(), 0..=INLINE_MAX),
                                  offs in proptest::collection::vec(any::<u32>(), 0..40),
                                  off in any::<u32>(), len in any::<u32>()) {
            let s = Slot::inline(&frame).unwrap();
            prop_assert_eq!(s.decode().unwrap(), Desc::Inline(&frame));
            let (a, f) = (Slot::arena(off, len), Slot::fallback(len));
            prop_assert_eq!(a.decode().unwrap(), Desc::Arena { offset: off, len });
            prop_assert_eq!(f.decode().unwrap(), Desc::Fallback { len });
            let (s, n) = Slot::release(&offs);
            prop_assert_eq!(n, offs.len().min(RELEASE_MAX));
            let Desc::Release(b) = s.decode().unwrap() else { panic!("kind") };
            prop_assert_eq!(release_offsets(b).collect::<Vec<_>>(), offs[..n].to_vec());
        }

        /// A model check: any interleaving of pushes and pops (single thread) behaves like a
        /// bounded FIFO queue.
        #[test]
        #[cfg_attr(miri, ignore = "proptest takes minutes per case under miri; the unit tests run the same unsafe code")]
        fn behaves_like_a_bounded_fifo(ops in proptest::collection::vec(any::<bool>(), 0..200)) {
            let (mut p, mut c, _m) = pair(8);
            let mut model = std::collections::VecDeque::new();
            let mut next = 0u32;
            for push in ops {
                if push {
                    let ok = p.push(&Slot::fallback(next)).unwrap();
                    prop_assert_eq!(ok, model.len() < 8);
                    if ok { model.push_back(next); }
                    next += 1;
                } else {
                    let got = c.pop().unwrap().map(|s| match s.decode().unwrap() {
                        Desc::Fallback { len } => len,
                        _ => u32::MAX,
                    });
                    prop_assert_eq!(got, model.pop_front());
                }
            }
        }
    }

    /// Two threads hammer one ring; every value arrives once, in order, and parking never
    /// loses a wakeup (the consumer parks on a condition the producer signals only when
    /// `take_parked` says so — a lost wakeup would hang and fail the timeout).
    #[test]
    fn stress_two_threads_in_order_without_lost_wakeups() {
        use std::sync::{Condvar, Mutex};
        // Under miri (its data-race detector and weak-memory emulation watch every slot copy
        // and index access) 2,000 descriptors take about ten seconds.
        const N: u32 = if cfg!(miri) { 2_000 } else { 200_000 };
        let (mut p, mut c, _m) = pair(16);
        let bell = Arc::new((Mutex::new(0u64), Condvar::new()));
        let space = Arc::new((Mutex::new(0u64), Condvar::new()));
        let (b2, s2) = (bell.clone(), space.clone());
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                loop {
                    if p.push(&Slot::arena(i, !i)).unwrap() {
                        break;
                    }
                    // Full: wait for the consumer to pop (through the waiting flag).
                    let seen = *s2.0.lock().unwrap();
                    if p.set_waiting().unwrap() {
                        continue;
                    }
                    let g = s2.0.lock().unwrap();
                    let (_g, r) = s2
                        .1
                        .wait_timeout_while(g, std::time::Duration::from_secs(10), |v| *v == seen)
                        .unwrap();
                    assert!(!r.timed_out(), "lost space wakeup");
                }
                if p.take_parked() {
                    *b2.0.lock().unwrap() += 1;
                    b2.1.notify_one();
                }
            }
        });
        let mut expect = 0u32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while expect < N {
            assert!(std::time::Instant::now() < deadline, "stuck at {expect}");
            match c.pop().unwrap() {
                Some(s) => {
                    assert_eq!(
                        s.decode().unwrap(),
                        Desc::Arena {
                            offset: expect,
                            len: !expect
                        }
                    );
                    expect += 1;
                    if c.take_waiting() {
                        *space.0.lock().unwrap() += 1;
                        space.1.notify_one();
                    }
                }
                None => {
                    let seen = *bell.0.lock().unwrap();
                    if c.park().unwrap() {
                        let g = bell.0.lock().unwrap();
                        let (_g, r) = bell
                            .1
                            .wait_timeout_while(g, std::time::Duration::from_secs(10), |v| {
                                *v == seen
                            })
                            .unwrap();
                        assert!(!r.timed_out(), "lost data wakeup");
                        c.unpark();
                    }
                }
            }
        }
        producer.join().unwrap();
        assert!(c.pop().unwrap().is_none());
    }
}

/// The loom model of the ring's synchronization: `RUSTFLAGS="--cfg loom" cargo test -p
/// rpc-transport-shm --release --lib loom`. The ring's own code runs on heap memory whose
/// header words and slots loom shadows (`crate::sync`); loom explores the interleavings and
/// the weak-memory outcomes of one producer and one consumer.
#[cfg(all(test, loom))]
mod loom_model {
    use super::*;
    use crate::mem::HeapMemory;
    use loom::thread;

    /// Heap memory holding one ring at offset 0, with loom's stand-ins for its header words
    /// and slots.
    struct LoomMemory {
        heap: HeapMemory,
        shadow: crate::mem::Shadow,
    }

    // SAFETY: the heap block is valid and page-aligned for as long as `heap` lives (its own
    // `Memory` impl); the shadow only adds loom's bookkeeping.
    unsafe impl Memory for LoomMemory {
        fn base(&self) -> std::ptr::NonNull<u8> {
            self.heap.base()
        }
        fn len(&self) -> usize {
            self.heap.len()
        }
        fn loom_shadow(&self) -> Option<&crate::mem::Shadow> {
            Some(&self.shadow)
        }
    }

    // SAFETY: the shadow's cells are loom's `UnsafeCell<()>` (not `Sync` by default): every
    // access to them is through `with`/`with_mut`, which is exactly what loom checks for
    // ordering; the atomics are loom's, `Sync` themselves.
    unsafe impl Sync for LoomMemory {}
    // SAFETY: as above; nothing in it is tied to a thread.
    unsafe impl Send for LoomMemory {}

    fn pair(cap: usize) -> (Producer, Consumer) {
        let words = [0, 8, OFF_HEAD, OFF_TAIL, OFF_PARKED, OFF_WAITING];
        let cells: Vec<usize> = (0..cap).map(|i| HEADER + i * SLOT).collect();
        let mem: Arc<dyn Memory> = Arc::new(LoomMemory {
            heap: HeapMemory::new(ring_bytes(cap)),
            shadow: crate::mem::Shadow::new(&words, &cells),
        });
        init(&mem, 0, cap).unwrap();
        (
            Producer::new(mem.clone(), 0, cap).unwrap(),
            Consumer::new(mem, 0, cap).unwrap(),
        )
    }

    /// Runs `f` under loom with at most `bound` preemptions per execution
    /// (`LOOM_MAX_PREEMPTIONS` overrides it). A lost wake-up needs two (one between the
    /// consumer's flag and its re-check, one between the producer's publish and its check);
    /// the bounds below are what keeps all three models within a few seconds in release.
    fn check(bound: usize, f: impl Fn() + Sync + Send + 'static) {
        let mut model = loom::model::Builder::new();
        if model.preemption_bound.is_none() {
            model.preemption_bound = Some(bound);
        }
        model.check(f);
    }

    /// One producer pushes `n` descriptors through a ring of `cap` slots to one consumer, both
    /// sleeping the way the link does (`thread::park` stands for the eventfd: a wake-up sent
    /// before the sleep is not lost, like the eventfd's counter). The consumer parks with
    /// `park` (flag, fence, re-check) and is woken only when the producer's `take_parked`
    /// says so after publishing; the producer waits for space with `set_waiting` and is woken
    /// only when the consumer's `take_waiting` says so after popping. A lost wake-up leaves a
    /// thread asleep forever, which loom reports as a deadlock; a slot read not ordered after
    /// its write (or a write not ordered after the previous read of that slot) is a causality
    /// violation on the slot's cell; everything arrives once and in order.
    ///
    /// The producer does not join the consumer: under loom a stale `unpark` (a wake-up the
    /// consumer sent for space the producer had already found) would end a `join` early. A
    /// consumer that never finishes is still a deadlock once the producer is done.
    fn hand_off(cap: usize, n: u32, bound: usize) {
        check(bound, move || {
            let (mut p, mut c) = pair(cap);
            let producer = thread::current();
            let consumer = thread::spawn(move || {
                let mut expect = 0u32;
                while expect < n {
                    match c.pop().unwrap() {
                        Some(s) => {
                            let want = Desc::Arena {
                                offset: expect,
                                len: !expect,
                            };
                            assert_eq!(s.decode().unwrap(), want);
                            expect += 1;
                            if c.take_waiting() {
                                producer.unpark();
                            }
                        }
                        None => {
                            if c.park().unwrap() {
                                thread::park();
                                c.unpark();
                            }
                        }
                    }
                }
                assert!(c.pop().unwrap().is_none(), "nothing beyond what was pushed");
            });
            let wake = consumer.thread().clone();
            drop(consumer);
            for i in 0..n {
                while !p.push(&Slot::arena(i, !i)).unwrap() {
                    if !p.set_waiting().unwrap() {
                        thread::park();
                    }
                }
                if p.take_parked() {
                    wake.unpark();
                }
            }
        });
    }

    /// The consumer's wake-up: it may find the ring empty and park at any point of the
    /// producer's pushes (the ring never fills). About 2,000 executions.
    #[test]
    fn loom_no_lost_wakeup_for_the_consumer() {
        hand_off(2, 2, 5);
    }

    /// Both wake-ups: the ring of one slot fills, so the producer waits for space while the
    /// consumer waits for data; the slot is reused, so each write of it must also be ordered
    /// after the consumer's read of the descriptor before. About 34,000 executions.
    #[test]
    fn loom_no_lost_wakeup_when_the_ring_fills() {
        hand_off(1, 3, 4);
    }

    /// The indices wrap: four descriptors through two slots, each slot reused once, with
    /// both sides parking. About 24,000 executions.
    #[test]
    fn loom_in_order_when_the_indices_wrap() {
        hand_off(2, 4, 3);
    }
}
