//! The sender-owned arena's bookkeeping: a buddy allocator over `[0, len)` with LIFO free
//! lists, kept in private memory (never in the shared region, so the peer cannot corrupt it).
//!
//! Only the owner allocates and frees; the peer returns blocks by offset through the reverse
//! ring, and [`Arena::free`] checks each returned offset is the start of a block that is
//! allocated now (a bogus or repeated release is an error that ends the session). LIFO reuse
//! keeps the most recently freed — cache-hot, already faulted — block at the front of its list,
//! so a steady load touches a handful of pages instead of walking the whole arena.
//!
//! [`Arena::alloc_exact`] takes a power-of-two block and gives its unused tail back at once
//! (as the aligned power-of-two pieces it splits into), so a frame of 64 KiB and its header
//! holds 65 KiB, not 128 KiB; freeing it frees those pieces, which merge with their buddies as
//! any block does.

/// Smallest block: 1 KiB (log2). Frames under [`crate::ring::INLINE_MAX`] bytes never reach
/// the arena, so finer classes would only lengthen the lists.
pub const MIN_ORDER: u32 = 10;
const NIL: u32 = u32::MAX;

/// Why [`Arena::free`] refused an offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArenaError {
    /// The offset is not the start of a block allocated now.
    #[error("offset {0} is not an allocated block (bogus or repeated release)")]
    NotAllocated(u32),
}

/// A buddy allocator: power-of-two blocks from 1 KiB to the whole arena.
#[derive(Debug)]
pub struct Arena {
    max_order: u32,
    /// Per order: the first free block (block index, in 1 KiB units), or NIL.
    heads: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Per block index: order + 1 if a free block of that order starts here, else 0.
    free_order: Vec<u8>,
    /// Per block index: the length in 1 KiB units of the allocation starting here, else 0.
    used_units: Vec<u32>,
    in_use: usize,
}

impl Arena {
    /// An arena of `len` bytes: a power of two, at least one minimum block, at most 2 GiB.
    pub fn new(len: usize) -> Option<Arena> {
        if !len.is_power_of_two() || !(1 << MIN_ORDER..=1 << 31).contains(&len) {
            return None;
        }
        let max_order = len.trailing_zeros();
        let blocks = len >> MIN_ORDER;
        let mut a = Arena {
            max_order,
            heads: vec![NIL; (max_order - MIN_ORDER + 1) as usize],
            next: vec![NIL; blocks],
            prev: vec![NIL; blocks],
            free_order: vec![0; blocks],
            used_units: vec![0; blocks],
            in_use: 0,
        };
        a.push(0, max_order);
        Some(a)
    }

    /// The arena's size in bytes.
    pub fn len(&self) -> usize {
        1 << self.max_order
    }

    /// Never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bytes allocated now (whole blocks).
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// The block size a request of `len` bytes takes, if it fits at all.
    pub fn block_size(&self, len: usize) -> Option<usize> {
        let order = order_for(len)?;
        (order <= self.max_order).then_some(1 << order)
    }

    fn push(&mut self, idx: u32, order: u32) {
        let o = (order - MIN_ORDER) as usize;
        let head = self.heads[o];
        self.next[idx as usize] = head;
        self.prev[idx as usize] = NIL;
        if head != NIL {
            self.prev[head as usize] = idx;
        }
        self.heads[o] = idx;
        self.free_order[idx as usize] = (order + 1) as u8;
    }

    fn unlink(&mut self, idx: u32, order: u32) {
        let o = (order - MIN_ORDER) as usize;
        let (p, n) = (self.prev[idx as usize], self.next[idx as usize]);
        if p == NIL {
            self.heads[o] = n;
        } else {
            self.next[p as usize] = n;
        }
        if n != NIL {
            self.prev[n as usize] = p;
        }
        self.free_order[idx as usize] = 0;
    }

    /// Allocates a block of at least `len` bytes: its offset and size (the power of two
    /// `len` rounds up to). `None` when no block that large is free now (the sender waits for
    /// releases) or `len` exceeds the arena.
    pub fn alloc(&mut self, len: usize) -> Option<(u32, usize)> {
        let order = order_for(len)?;
        let idx = self.take(order)?;
        self.used_units[idx as usize] = 1 << (order - MIN_ORDER);
        self.in_use += 1 << order;
        Some((idx << MIN_ORDER, 1 << order))
    }

    /// Allocates `len` bytes rounded up to whole 1 KiB units only: its offset and size. It
    /// needs a free block of the power of two `len` rounds up to (as [`Arena::alloc`]), keeps
    /// its head and frees the rest at once. `None` as for [`Arena::alloc`].
    pub fn alloc_exact(&mut self, len: usize) -> Option<(u32, usize)> {
        let order = order_for(len)?;
        let units = len.max(1).div_ceil(1 << MIN_ORDER);
        let idx = self.take(order)?;
        // The tail `[units, 2^(order - MIN_ORDER))` as the aligned power-of-two pieces it splits
        // into: each piece is as large as its start's alignment and the end allow.
        let end = 1usize << (order - MIN_ORDER);
        let mut at = units;
        while at < end {
            let piece = (1usize << at.trailing_zeros()).min(end - at);
            let piece = 1usize << piece.ilog2();
            self.push(idx + at as u32, MIN_ORDER + piece.trailing_zeros());
            at += piece;
        }
        self.used_units[idx as usize] = units as u32;
        self.in_use += units << MIN_ORDER;
        Some((idx << MIN_ORDER, units << MIN_ORDER))
    }

    /// Takes a free block of `order` off its list (splitting a larger one if need be): its
    /// index.
    fn take(&mut self, order: u32) -> Option<u32> {
        if order > self.max_order {
            return None;
        }
        let mut k = order;
        while self.heads[(k - MIN_ORDER) as usize] == NIL {
            k += 1;
            if k > self.max_order {
                return None;
            }
        }
        let idx = self.heads[(k - MIN_ORDER) as usize];
        self.unlink(idx, k);
        while k > order {
            k -= 1;
            self.push(idx + (1 << (k - MIN_ORDER)), k);
        }
        Some(idx)
    }

    /// Whether a block for `len` bytes is free now.
    pub fn can_alloc(&self, len: usize) -> bool {
        let Some(order) = order_for(len) else {
            return false;
        };
        (order..=self.max_order).any(|k| self.heads[(k - MIN_ORDER) as usize] != NIL)
    }

    /// Frees the block starting at `offset`; returns its size.
    pub fn free(&mut self, offset: u32) -> Result<usize, ArenaError> {
        let bad = ArenaError::NotAllocated(offset);
        if offset % (1 << MIN_ORDER) != 0 {
            return Err(bad);
        }
        let idx = offset >> MIN_ORDER;
        let Some(&units) = self.used_units.get(idx as usize) else {
            return Err(bad);
        };
        if units == 0 {
            return Err(bad);
        }
        self.used_units[idx as usize] = 0;
        self.in_use -= (units as usize) << MIN_ORDER;
        // The allocation's units, largest power of two first: each piece starts aligned to
        // its size (the allocation starts aligned to the power of two it rounded up to).
        let mut at = idx;
        let mut rest = units;
        while rest != 0 {
            let piece = 1u32 << rest.ilog2();
            self.release(at, MIN_ORDER + piece.trailing_zeros());
            at += piece;
            rest -= piece;
        }
        Ok((units as usize) << MIN_ORDER)
    }

    /// Returns the free block `idx` of `order`, merged with its free buddies.
    fn release(&mut self, mut idx: u32, mut order: u32) {
        while order < self.max_order {
            let buddy = idx ^ (1 << (order - MIN_ORDER));
            if u32::from(self.free_order[buddy as usize]) != order + 1 {
                break;
            }
            self.unlink(buddy, order);
            idx = idx.min(buddy);
            order += 1;
        }
        self.push(idx, order);
    }

    /// Forgets every allocation (the peer is gone: whatever it held is ours again).
    pub fn reset(&mut self) {
        if let Some(fresh) = Arena::new(self.len()) {
            *self = fresh;
        }
    }
}

fn order_for(len: usize) -> Option<u32> {
    let order = len.max(1).checked_next_power_of_two()?.trailing_zeros();
    Some(order.max(MIN_ORDER))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn allocates_splits_and_merges_back() {
        let mut a = Arena::new(1 << 16).unwrap();
        let (x, sx) = a.alloc(100).unwrap();
        assert_eq!(sx, 1024);
        let (y, sy) = a.alloc(5000).unwrap();
        assert_eq!(sy, 8192);
        assert_ne!(x, y);
        assert_eq!(a.in_use(), 1024 + 8192);
        a.free(x).unwrap();
        a.free(y).unwrap();
        assert_eq!(a.in_use(), 0);
        // Fully merged: the whole arena is one block again.
        assert_eq!(a.alloc(1 << 16), Some((0, 1 << 16)));
        assert_eq!(a.alloc(1), None, "full");
    }

    #[test]
    fn reuse_is_lifo() {
        let mut a = Arena::new(1 << 20).unwrap();
        let blocks: Vec<_> = (0..8).map(|_| a.alloc(4096).unwrap().0).collect();
        a.free(blocks[3]).unwrap();
        a.free(blocks[6]).unwrap();
        assert_eq!(
            a.alloc(4096).unwrap().0,
            blocks[6],
            "last freed, first reused"
        );
    }

    #[test]
    fn bogus_releases_are_refused() {
        let mut a = Arena::new(1 << 16).unwrap();
        let (x, _) = a.alloc(2048).unwrap();
        assert!(a.free(x + 1024).is_err(), "inside a block");
        assert!(a.free(x + 1).is_err(), "unaligned");
        assert!(a.free(1 << 20).is_err(), "outside");
        a.free(x).unwrap();
        assert!(a.free(x).is_err(), "double free");
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn oversized_and_bad_sizes() {
        assert!(Arena::new(3000).is_none());
        assert!(Arena::new(512).is_none());
        let mut a = Arena::new(1 << 12).unwrap();
        assert!(a.alloc((1 << 12) + 1).is_none());
        assert!(a.alloc(usize::MAX).is_none());
        assert_eq!(a.block_size(usize::MAX), None);
    }

    #[test]
    fn exact_allocation_gives_the_tail_back() {
        let mut a = Arena::new(1 << 20).unwrap();
        // A 64 KiB message and its frame header: 65 KiB, not a 128 KiB block.
        let (x, sx) = a.alloc_exact((64 << 10) + 40).unwrap();
        assert_eq!((x, sx), (0, 65 << 10));
        assert_eq!(a.in_use(), 65 << 10);
        // The tail's pieces serve smaller blocks: 63 KiB of 1..32 KiB blocks fit behind it.
        let tail: Vec<_> = [32, 16, 8, 4, 2, 1]
            .iter()
            .map(|k| a.alloc(k << 10).unwrap())
            .collect();
        assert!(tail
            .iter()
            .all(|&(o, _)| (65 << 10..128 << 10).contains(&o)));
        assert_eq!(a.in_use(), 128 << 10);
        for (o, _) in tail {
            a.free(o).unwrap();
        }
        assert_eq!(a.free(x), Ok(65 << 10));
        assert_eq!(a.in_use(), 0);
        assert_eq!(a.alloc(1 << 20), Some((0, 1 << 20)), "merged back whole");
        // Still needs a free block of the power of two it rounds up to.
        let mut a = Arena::new(1 << 17).unwrap();
        assert!(a.alloc_exact((64 << 10) + 1).is_some());
        assert!(a.alloc_exact((64 << 10) + 1).is_none());
        assert!(a.alloc_exact((1 << 17) + 1).is_none());
        assert!(a.alloc_exact(usize::MAX).is_none());
    }

    proptest! {
        /// Any sequence of allocations and frees: blocks never overlap, stay inside the
        /// arena, `in_use` is the sum of live blocks, and freeing everything restores one
        /// whole block.
        #[test]
        #[cfg_attr(miri, ignore = "proptest takes minutes per case under miri; the unit tests cover the allocator")]
        fn never_overlaps_and_always_merges(ops in proptest::collection::vec((any::<bool>(), 1usize..40_000, any::<prop::sample::Index>()), 0..300)) {
            let len = 1 << 18;
            let mut a = Arena::new(len).unwrap();
            let mut live: Vec<(u32, usize)> = Vec::new();
            for (alloc, size, pick) in ops {
                if alloc || live.is_empty() {
                    if let Some((off, sz)) = a.alloc(size) {
                        prop_assert!(sz >= size);
                        prop_assert!(off as usize + sz <= len);
                        for &(o, s) in &live {
                            prop_assert!(off as usize + sz <= o as usize || o as usize + s <= off as usize);
                        }
                        live.push((off, sz));
                    }
                } else {
                    let (off, sz) = live.swap_remove(pick.index(live.len()));
                    prop_assert_eq!(a.free(off).unwrap(), sz);
                }
                prop_assert_eq!(a.in_use(), live.iter().map(|l| l.1).sum::<usize>());
            }
            for (off, _) in live.drain(..) {
                a.free(off).unwrap();
            }
            prop_assert_eq!(a.alloc(len), Some((0, len)));
        }

        /// The same with exact allocations mixed in: blocks never overlap, `in_use` is the sum
        /// of live sizes (whole KiB), and freeing everything merges the arena back whole.
        #[test]
        #[cfg_attr(miri, ignore = "proptest takes minutes per case under miri; the unit tests cover the allocator")]
        fn exact_allocations_never_overlap_and_merge(ops in proptest::collection::vec((0u8..3, 1usize..70_000, any::<prop::sample::Index>()), 0..300)) {
            let len = 1 << 18;
            let mut a = Arena::new(len).unwrap();
            let mut live: Vec<(u32, usize)> = Vec::new();
            for (op, size, pick) in ops {
                if op < 2 || live.is_empty() {
                    let got = if op == 0 { a.alloc(size) } else { a.alloc_exact(size) };
                    if let Some((off, sz)) = got {
                        prop_assert!(sz >= size && sz % 1024 == 0);
                        if op == 1 {
                            prop_assert_eq!(sz, size.div_ceil(1024) * 1024);
                        }
                        prop_assert!(off as usize + sz <= len);
                        for &(o, s) in &live {
                            prop_assert!(off as usize + sz <= o as usize || o as usize + s <= off as usize);
                        }
                        live.push((off, sz));
                    }
                } else {
                    let (off, sz) = live.swap_remove(pick.index(live.len()));
                    prop_assert_eq!(a.free(off).unwrap(), sz);
                    prop_assert!(a.free(off).is_err(), "double free");
                }
                prop_assert_eq!(a.in_use(), live.iter().map(|l| l.1).sum::<usize>());
            }
            for (off, _) in live.drain(..) {
                a.free(off).unwrap();
            }
            prop_assert_eq!(a.alloc(len), Some((0, len)));
        }
    }
}
