//! Memory that rings and arenas live in: a shared mapping of a memfd region, or (tests) plain
//! heap memory with the same alignment.

use std::ptr::NonNull;

/// Page size the layouts align to (the smallest on every Linux target we run on).
pub const PAGE: usize = 4096;

/// A block of memory the transport reads and writes through raw pointers.
///
/// # Safety
///
/// Implementors guarantee that `base()` is aligned to [`PAGE`] and valid for reads and writes
/// of `len()` bytes for as long as the value lives, and that it is never unmapped or freed
/// before the value is dropped. The memory may be written concurrently by another thread or
/// process: users only touch it through atomics (ring indices and flags) or through byte
/// copies and slices of regions the protocol assigns to one writer at a time.
pub unsafe trait Memory: Send + Sync + 'static {
    /// The first byte.
    fn base(&self) -> NonNull<u8>;
    /// The length in bytes.
    fn len(&self) -> usize;
    /// Whether the block is empty (never, for a valid region).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Under `--cfg loom` only: the model checker's stand-ins for the atomics and slots of
    /// this memory (only the ring's loom model has them; see `crate::sync`).
    #[cfg(all(test, loom))]
    #[doc(hidden)]
    fn loom_shadow(&self) -> Option<&Shadow> {
        None
    }
}

/// Zeroed heap memory aligned like a mapping: rings and arenas in one process (tests, stress
/// tests, benchmarks of the data structures).
#[derive(Debug)]
pub struct HeapMemory {
    ptr: NonNull<u8>,
    layout: std::alloc::Layout,
}

impl HeapMemory {
    /// `len` zeroed bytes (at least one page).
    pub fn new(len: usize) -> HeapMemory {
        let layout = std::alloc::Layout::from_size_align(len.max(PAGE), PAGE)
            .unwrap_or_else(|_| std::alloc::Layout::new::<[u8; PAGE]>());
        // SAFETY: the layout has a non-zero size (at least one page).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        HeapMemory { ptr, layout }
    }
}

// SAFETY: the allocation is owned by this value and only reached through raw pointers whose
// users synchronize through atomics (see `Memory`); moving or sharing the owner across threads
// is as safe as sharing a `Vec<AtomicU8>`.
unsafe impl Send for HeapMemory {}
// SAFETY: as for `Send`: no `&mut` access is handed out by the owner itself.
unsafe impl Sync for HeapMemory {}

// SAFETY: `alloc_zeroed` returned `layout.size()` bytes aligned to `PAGE`, freed only in Drop.
unsafe impl Memory for HeapMemory {
    fn base(&self) -> NonNull<u8> {
        self.ptr
    }
    fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for HeapMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout and not freed before.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Under loom: the model's stand-ins for a memory's shared words and slots, by byte offset.
/// Built inside `loom::model` (loom objects belong to one execution).
#[cfg(all(test, loom))]
#[allow(unreachable_pub)]
#[derive(Debug)]
pub struct Shadow {
    words: Vec<(usize, loom::sync::atomic::AtomicU64)>,
    cells: Vec<(usize, loom::cell::UnsafeCell<()>)>,
}

#[cfg(all(test, loom))]
impl Shadow {
    /// Atomics at the byte offsets `words`, cells for the slots at the byte offsets `cells`.
    #[allow(unreachable_pub)]
    pub fn new(words: &[usize], cells: &[usize]) -> Shadow {
        Shadow {
            words: words
                .iter()
                .map(|&o| (o, loom::sync::atomic::AtomicU64::new(0)))
                .collect(),
            cells: cells
                .iter()
                .map(|&o| (o, loom::cell::UnsafeCell::new(())))
                .collect(),
        }
    }

    pub(crate) fn word(&self, offset: usize) -> &loom::sync::atomic::AtomicU64 {
        let found = self.words.iter().find(|(o, _)| *o == offset);
        &found.expect("no shadow atomic at this offset").1
    }

    pub(crate) fn cell(&self, offset: usize) -> &loom::cell::UnsafeCell<()> {
        let found = self.cells.iter().find(|(o, _)| *o == offset);
        &found.expect("no shadow cell at this offset").1
    }
}
