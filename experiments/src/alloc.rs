//! The binaries' global allocator: mimalloc, except that large zeroed byte buffers
//! are fresh zero pages of the kernel.
//!
//! burn-flex allocates every matmul output as a zeroed `Vec<u8>` and, because that
//! vector's declared alignment is 1, copies it at once into a 16-byte-aligned buffer
//! and frees it (`FlexTensor::empty`, cubecl's `Bytes::from_bytes_vec`). The zeroed
//! buffer is only ever read, by that copy. mimalloc, which keeps freed pages (see
//! [`crate::prepare_process`]), zeroes it with a memset on one thread: for
//! attention's `[batch, heads, seq, seq]` scores (107 MB on dis-compact) that memset
//! and the copy were a tenth of a training step, with the pool's other threads
//! waiting (docs/performance.md).
//!
//! Here a zeroed request for bytes (alignment 1) of at least [`FRESH_ZEROED_BYTES`]
//! is a new anonymous mapping marked for transparent huge pages. Reading it maps the
//! kernel's shared huge zero page, one 2 MiB page for every 2 MiB: nothing is
//! zeroed, and the copy reads from one page that stays in cache. Its free unmaps it.
//! It is switched on by [`enable_zero_pages`] only where the kernel maps that page
//! (`/sys/kernel/mm/transparent_hugepage`); elsewhere reading fresh 4 KiB pages
//! would fault once per page, slower than the memset. Zeroed buffers of other
//! element types (`vec![0.0f32; n]`) are written after they are allocated, and
//! there a fresh mapping would fault in every page: they stay with mimalloc.
//!
//! It also counts the bytes live on the heap and their peak, for
//! `train.micro_batches = "auto"` ([`count_heap`]): mimalloc keeps freed pages, so the
//! resident memory says little about what a step needs.

use std::alloc::{GlobalAlloc, Layout};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mimalloc::MiMalloc;

/// The smallest zeroed byte buffer served by a fresh mapping: two huge pages.
pub const FRESH_ZEROED_BYTES: usize = 4 << 20;

/// A transparent huge page on x86-64 and aarch64 with 4 KiB base pages.
const HUGE_PAGE: usize = 2 << 20;

/// The mappings alive at once (burn-flex frees each right after its copy); a
/// request that finds every slot taken goes to mimalloc.
const SLOTS: usize = 64;

/// The global allocator of the `recursa` binary and its examples.
pub struct Allocator;

/// Bytes allocated and not yet freed, through [`Allocator`].
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The most [`LIVE`] has been since the last [`reset_peak`].
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Counts an allocation of `bytes`.
fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    if live > PEAK.load(Ordering::Relaxed) {
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

/// Counts a free of `bytes`.
fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

fn live() -> u64 {
    LIVE.load(Ordering::Relaxed) as u64
}

fn peak() -> u64 {
    PEAK.load(Ordering::Relaxed) as u64
}

fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Hands the heap's counts to `train.micro_batches = "auto"` if [`Allocator`] is this
/// process's global allocator (a probe allocation shows whether it counts). Returns
/// whether it is.
pub fn count_heap() -> bool {
    let before = LIVE.load(Ordering::Relaxed);
    let probe = std::hint::black_box(vec![0u8; 1 << 20]);
    let counted = LIVE.load(Ordering::Relaxed) >= before + (1 << 20);
    drop(probe);
    if counted {
        recursa_core::train::memory::count_heap_with(recursa_core::train::memory::HeapCounter {
            live,
            peak,
            reset_peak,
        });
    }
    counted
}

static ZERO_PAGES: AtomicBool = AtomicBool::new(false);

/// Start addresses of the live fresh mappings; 0 marks a free slot.
static MAPPINGS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

/// Serve large zeroed byte buffers from fresh zero pages if the kernel maps its huge
/// zero page on a read (transparent huge pages `always` or `madvise`, and
/// `use_zero_page` 1). Returns whether it did.
pub fn enable_zero_pages() -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    let read = |file: &str| {
        std::fs::read_to_string(format!("/sys/kernel/mm/transparent_hugepage/{file}"))
            .unwrap_or_default()
    };
    let enabled = read("enabled");
    let on = (enabled.contains("[always]") || enabled.contains("[madvise]"))
        && read("use_zero_page").trim() == "1";
    ZERO_PAGES.store(on, Ordering::Relaxed);
    on
}

/// Whether `layout` is of the kind this allocator maps fresh when zeroed (the
/// frees check this, not whether mapping is on).
fn large_bytes(layout: Layout) -> bool {
    layout.align() == 1 && layout.size() >= FRESH_ZEROED_BYTES
}

/// `size` rounded up to whole huge pages.
fn mapped_len(size: usize) -> usize {
    size.div_ceil(HUGE_PAGE) * HUGE_PAGE
}

/// A fresh zero mapping of `size` bytes starting on a huge page, or null.
///
/// # Safety
/// As `GlobalAlloc::alloc_zeroed`.
#[cfg(target_os = "linux")]
unsafe fn map_zeroed(size: usize) -> *mut u8 {
    let len = mapped_len(size);
    // One huge page more, so that a huge page boundary lies in the first one.
    let Some(span) = len.checked_add(HUGE_PAGE) else {
        return ptr::null_mut();
    };
    // SAFETY: an anonymous private mapping at an address the kernel picks.
    let raw = unsafe {
        libc::mmap(
            ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return ptr::null_mut();
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE);
    // SAFETY: the head and tail trimmed are page-aligned parts of the mapping just
    // made (mmap returns page-aligned addresses; HUGE_PAGE and len are multiples of
    // the page), and the kept part is [aligned, aligned + len).
    unsafe {
        if aligned > start {
            libc::munmap(raw, aligned - start);
        }
        let tail = start + span - (aligned + len);
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        // Advice only: without it the kernel may map 4 KiB zero pages, still zero.
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    aligned as *mut u8
}

/// Unmaps a mapping made by [`map_zeroed`] for `size` bytes.
///
/// # Safety
/// `p` is such a mapping, not used afterwards.
#[cfg(target_os = "linux")]
unsafe fn unmap(p: *mut u8, size: usize) {
    // SAFETY: the caller's.
    unsafe { libc::munmap(p.cast(), mapped_len(size)) };
}

/// Mappings are made on Linux only ([`enable_zero_pages`] stays off elsewhere).
#[cfg(not(target_os = "linux"))]
unsafe fn map_zeroed(_size: usize) -> *mut u8 {
    ptr::null_mut()
}

#[cfg(not(target_os = "linux"))]
unsafe fn unmap(_p: *mut u8, _size: usize) {}

/// Takes a free slot for the mapping at `p`; false if none is free.
fn record(p: *mut u8) -> bool {
    MAPPINGS.iter().any(|slot| {
        slot.compare_exchange(0, p as usize, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

/// Frees the slot of the mapping at `p`; false if `p` is not one.
fn forget(p: *mut u8) -> bool {
    MAPPINGS.iter().any(|slot| {
        slot.compare_exchange(p as usize, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

// SAFETY: every pointer handed out is either mimalloc's (and goes back to it) or a
// fresh mapping recorded in MAPPINGS (and is unmapped on its free), sized and
// aligned for its layout.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { MiMalloc.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if large_bytes(layout) && ZERO_PAGES.load(Ordering::Relaxed) {
            // SAFETY: as the caller's.
            let p = unsafe { map_zeroed(layout.size()) };
            if !p.is_null() {
                if record(p) {
                    grew(layout.size());
                    return p;
                }
                // SAFETY: p is the mapping just made for this size.
                unsafe { unmap(p, layout.size()) };
            }
        }
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        shrank(layout.size());
        if large_bytes(layout) && forget(p) {
            // SAFETY: p is a live mapping of this layout's size (MAPPINGS).
            unsafe { unmap(p, layout.size()) };
            return;
        }
        // SAFETY: p came from mimalloc.
        unsafe { MiMalloc.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if large_bytes(layout)
            && MAPPINGS
                .iter()
                .any(|s| s.load(Ordering::Acquire) == p as usize)
        {
            // A mapping that grows or shrinks moves to mimalloc.
            // SAFETY: the new layout is valid (the caller's guarantee for new_size).
            let moved = unsafe {
                MiMalloc.alloc(Layout::from_size_align_unchecked(new_size, layout.align()))
            };
            if !moved.is_null() {
                grew(new_size);
                // SAFETY: both buffers hold at least the smaller size; they do not overlap.
                unsafe {
                    ptr::copy_nonoverlapping(p, moved, layout.size().min(new_size));
                    self.dealloc(p, layout);
                }
            }
            return moved;
        }
        // SAFETY: p came from mimalloc.
        let moved = unsafe { MiMalloc.realloc(p, layout, new_size) };
        if !moved.is_null() {
            grew(new_size);
            shrank(layout.size());
        }
        moved
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn large_zeroed_bytes_are_zero_and_freed() {
        let was = ZERO_PAGES.swap(true, Ordering::Relaxed);
        let layout = Layout::from_size_align(FRESH_ZEROED_BYTES + 123, 1).unwrap();
        // SAFETY: a non-zero layout; the buffer is freed with the same layout.
        unsafe {
            let p = Allocator.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % HUGE_PAGE, 0, "a mapping starts on a huge page");
            assert!(MAPPINGS
                .iter()
                .any(|s| s.load(Ordering::Relaxed) == p as usize));
            let bytes = std::slice::from_raw_parts_mut(p, layout.size());
            assert!(bytes.iter().all(|&b| b == 0));
            bytes[layout.size() - 1] = 7;
            // Growing moves it to mimalloc with its contents.
            let grown = Allocator.realloc(p, layout, layout.size() + 10);
            assert!(!MAPPINGS
                .iter()
                .any(|s| s.load(Ordering::Relaxed) == p as usize));
            assert_eq!(*grown.add(layout.size() - 1), 7);
            assert_eq!(*grown, 0);
            Allocator.dealloc(
                grown,
                Layout::from_size_align(layout.size() + 10, 1).unwrap(),
            );
            // Small and non-byte requests stay with mimalloc, zeroed as well.
            for layout in [
                Layout::from_size_align(1000, 1).unwrap(),
                Layout::from_size_align(FRESH_ZEROED_BYTES, 4).unwrap(),
            ] {
                let q = Allocator.alloc_zeroed(layout);
                assert!(!MAPPINGS
                    .iter()
                    .any(|s| s.load(Ordering::Relaxed) == q as usize));
                assert!(std::slice::from_raw_parts(q, layout.size())
                    .iter()
                    .all(|&b| b == 0));
                Allocator.dealloc(q, layout);
            }
        }
        ZERO_PAGES.store(was, Ordering::Relaxed);
    }
}
