//! The `recursa` command line's library: what the subcommands do, callable from tests.
//!
//! * [`verify`]: check this implementation against a reference fixture file.
//! * [`plot`]: training curves of runs as a PNG and a CSV.

pub mod alloc;
pub mod bench;
pub mod cli;
pub mod distributed;
pub mod eval;
pub mod finetune;
pub mod plot;
pub mod progress;
pub mod tasks;
pub mod tolerance;
pub mod train;
pub mod verify;

// Link every plugin into whatever uses this library (inventory/typetag registrations).
use recursa_plugins as _;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h; the crate names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Process-wide settings for the binaries built on this library; call it first
/// thing in `main`, before any other thread starts.
///
/// * mimalloc, the binaries' global allocator, never hands freed pages back to the
///   OS. By default it does so 10 ms after a free; a training step frees and
///   reallocates the same large buffers every few milliseconds, and zeroing the
///   re-faulted pages was an eighth of the CPU time (docs/performance.md). The cost
///   is the freed pages staying resident.
/// * Large zeroed byte buffers are fresh zero pages where the kernel allows it
///   ([`alloc`]), if [`alloc::Allocator`] is the global allocator.
/// * Training and evaluation steps run on a thread of rayon's pool
///   (`recursa_core::train::pool`): its threads get the main thread's 8 MiB of
///   stack rather than the 2 MiB of a spawned thread. The pool's size still follows
///   `RAYON_NUM_THREADS`. If the pool already exists, its default stack serves.
pub fn prepare_process() {
    // SAFETY: sets a plain integer option of the allocator.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    alloc::enable_zero_pages();
    alloc::count_heap();
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .build_global();
}

/// `6829058` as `6,829,058`: parameter counts as papers and configs write them.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_groups_digits_in_threes() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(6_829_058), "6,829,058");
    }
}
