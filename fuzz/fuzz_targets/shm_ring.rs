//! The shared-memory transport's validation of what the peer controls
//! (`rpc-transport-shm`): descriptors it writes into the ring, the ring indices it writes into
//! shared memory (a hostile peer may scribble them at any time), the blocks it returns to our
//! arena, and where an arena descriptor points.
//!
//! Asserts, beyond "no panic" (and, under AddressSanitizer, no access outside the ring):
//! - descriptors: every constructor decodes to what it was built from; any 128 bytes decode
//!   to a descriptor within the slot, or to an error;
//! - ring: with an honest peer, pops return exactly what was pushed, in order, and `push`
//!   reports full exactly at capacity; after the peer scribbles an index, every operation
//!   still either works or reports `Corrupt`, and never yields more than a ring's worth of
//!   descriptors beyond what was pushed;
//! - arena (checked against a model): blocks are aligned to their size, inside the arena and
//!   disjoint; `can_alloc` predicts `alloc`; a release of anything but a live block's start
//!   is refused and changes nothing; `in_use` is the sum of live blocks; after everything is
//!   returned the whole arena is one block again;
//! - arena descriptors: the span the reader slices is inside the arena, non-empty and exactly
//!   the descriptor's length.
#![no_main]

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use rpc_transport_shm::arena::Arena;
use rpc_transport_shm::fuzzing::arena_span;
use rpc_transport_shm::mem::{HeapMemory, Memory};
use rpc_transport_shm::ring::{
    self, release_offsets, Consumer, Desc, Producer, RingError, Slot, INLINE_MAX, RELEASE_MAX, SLOT,
};

fn slots(u: &mut Unstructured<'_>) -> Result<()> {
    let raw: [u8; SLOT] = u.arbitrary()?;
    match Slot(raw).decode() {
        Ok(Desc::Inline(b)) => assert!(b.len() <= INLINE_MAX),
        Ok(Desc::Release(b)) => assert!(b.len() % 4 == 0 && b.len() <= 4 * RELEASE_MAX),
        Ok(Desc::Arena { .. } | Desc::Fallback { .. }) | Err(RingError::BadDescriptor(_)) => {}
        Err(e) => panic!("decode failed with {e}"),
    }
    let len = u.int_in_range(0..=INLINE_MAX + 8)?;
    let frame = u.bytes(len.min(u.len()))?;
    match Slot::inline(frame) {
        Some(s) => assert_eq!(s.decode(), Ok(Desc::Inline(frame))),
        None => assert!(frame.len() > INLINE_MAX),
    }
    let (offset, len): (u32, u32) = (u.arbitrary()?, u.arbitrary()?);
    assert_eq!(
        Slot::arena(offset, len).decode(),
        Ok(Desc::Arena { offset, len })
    );
    assert_eq!(Slot::fallback(len).decode(), Ok(Desc::Fallback { len }));
    let offsets: Vec<u32> = u.arbitrary()?;
    let (s, n) = Slot::release(&offsets);
    assert_eq!(n, offsets.len().min(RELEASE_MAX));
    match s.decode() {
        Ok(Desc::Release(b)) => assert!(release_offsets(b).eq(offsets[..n].iter().copied())),
        other => panic!("release decoded as {other:?}"),
    }
    let arena_len: usize = 1 << u.int_in_range(10..=30)?;
    match arena_span(offset, len, arena_len) {
        Ok(r) => assert!(
            r.start == offset as usize && r.len() == len as usize && len > 0 && r.end <= arena_len
        ),
        Err(_) => assert!(len == 0 || offset as usize + len as usize > arena_len),
    }
    Ok(())
}

/// Writes `v` where the peer's index lives, as a hostile peer would.
fn scribble(mem: &Arc<dyn Memory>, field: usize, v: u64) {
    assert!(field + 8 <= ring::HEADER && field % 8 == 0);
    // SAFETY: `field + 8 <= HEADER <= mem.len()` (the ring was laid out in this memory) and the
    // address is 8-aligned (page-aligned base); the ring reads these bytes only as atomics.
    let a = unsafe { &*(mem.base().as_ptr().add(field) as *const AtomicU64) };
    a.store(v, Ordering::Release);
}

fn rings(u: &mut Unstructured<'_>) -> Result<()> {
    let cap = 1usize << u.int_in_range(0..=3)?;
    let mem: Arc<dyn Memory> = Arc::new(HeapMemory::new(ring::ring_bytes(cap)));
    ring::init(&mem, 0, cap).expect("layout fits");
    let mut p = Producer::new(mem.clone(), 0, cap).expect("layout fits");
    let mut c = Consumer::new(mem.clone(), 0, cap).expect("layout fits");
    let mut model: VecDeque<u8> = VecDeque::new();
    let mut honest = true;
    let mut pushed = 0u64;
    let mut popped = 0u64;
    for _ in 0..u.int_in_range(0..=64)? {
        match u.int_in_range(0..=3)? {
            0 => {
                let tag: u8 = u.arbitrary()?;
                match p.push(&Slot::inline(&[tag]).expect("inline")) {
                    Ok(true) => {
                        pushed += 1;
                        model.push_back(tag);
                    }
                    Ok(false) => assert!(!honest || model.len() == cap, "full below capacity"),
                    Err(e) => assert!(!honest, "honest ring failed: {e}"),
                }
                if honest {
                    assert!(model.len() <= cap);
                }
            }
            1 => match c.pop() {
                Ok(Some(slot)) => {
                    popped += 1;
                    assert!(
                        popped <= pushed + cap as u64,
                        "popped more than a ring beyond what was pushed"
                    );
                    if honest {
                        let want = model.pop_front().expect("popped from an empty ring");
                        assert_eq!(slot.decode(), Ok(Desc::Inline(&[want])));
                    }
                }
                Ok(None) => assert!(!honest || model.is_empty(), "a pushed slot was not seen"),
                Err(e) => assert!(!honest, "honest ring failed: {e}"),
            },
            2 => {
                // The peer overwrites head (it is the producer) or tail (the consumer).
                let field = if u.arbitrary()? { 64 } else { 128 };
                scribble(&mem, field, u.arbitrary()?);
                honest = false;
            }
            _ => {
                let _ = p.free();
                let _ = p.has_space();
                let _ = c.is_empty();
                let _ = p.take_parked();
                let _ = c.take_waiting();
                if let Ok(false) = c.park() {
                    assert!(!honest || !model.is_empty());
                }
                c.unpark();
            }
        }
    }
    Ok(())
}

fn arena(u: &mut Unstructured<'_>) -> Result<()> {
    let len = 1usize << u.int_in_range(10..=20)?;
    let mut a = Arena::new(len).expect("valid size");
    assert!(Arena::new(len + 1).is_none());
    let mut live: BTreeMap<u32, usize> = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=128)? {
        if u.arbitrary()? {
            let want = u.int_in_range(0..=len + 1)?;
            let predicted = a.can_alloc(want);
            match a.alloc(want) {
                Some((off, size)) => {
                    assert!(predicted);
                    assert_eq!(Some(size), a.block_size(want));
                    assert!(size >= want && size.is_power_of_two());
                    assert_eq!(off as usize % size, 0, "block not aligned to its size");
                    assert!(off as usize + size <= len);
                    let end = off as usize + size;
                    for (&o, &s) in &live {
                        assert!(
                            end <= o as usize || o as usize + s <= off as usize,
                            "blocks overlap"
                        );
                    }
                    live.insert(off, size);
                }
                None => assert!(!predicted, "can_alloc said yes, alloc said no"),
            }
        } else {
            let off: u32 = if !live.is_empty() && u.arbitrary()? {
                let i = u.choose_index(live.len())?;
                *live.keys().nth(i).expect("index in range")
            } else {
                u.arbitrary()?
            };
            let before = a.in_use();
            match (a.free(off), live.remove(&off)) {
                (Ok(size), Some(s)) => assert_eq!(size, s),
                (Err(_), None) => {
                    assert_eq!(a.in_use(), before, "a refused release changed the arena")
                }
                (got, want) => panic!("free({off}) = {got:?}, model says {want:?}"),
            }
        }
        assert_eq!(a.in_use(), live.values().sum::<usize>());
    }
    for (off, size) in std::mem::take(&mut live) {
        assert_eq!(a.free(off), Ok(size));
    }
    assert_eq!(a.in_use(), 0);
    assert_eq!(a.alloc(len), Some((0, len)), "arena did not merge back");
    a.reset();
    assert_eq!(a.in_use(), 0);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = match u.int_in_range(0..=2u8) {
        Ok(0) => slots(&mut u),
        Ok(1) => rings(&mut u),
        Ok(_) => arena(&mut u),
        Err(_) => Ok(()),
    };
});
