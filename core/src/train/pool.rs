//! Where a step runs: on a thread of rayon's global pool.
//!
//! The CPU kernels (burn-flex's GEMMs, the fused passes of `model::fused`) split
//! their work with rayon. Started from a thread outside the pool, such as the
//! program's main thread, every parallel region is queued to the pool, and the
//! pool's second thread often joined only after the first had done the whole
//! region: in a 2-thread pool, the second half of a `join` of two 1 ms tasks
//! started after 1.06 ms (median), the two tasks ran one after the other. Started
//! from a pool thread, the caller runs its half at once and the other thread
//! steals the rest within 40-70 us (docs/performance.md, change 17).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::model::fused::apart_from_frozen_weights;

/// Runs `f` on a thread of rayon's global pool, or directly when the caller already
/// is one (of any pool), and returns what it returns. The calling thread waits.
///
/// While `f` runs, the pool's other threads wait for its parallel work spinning
/// rather than asleep, as OpenMP's threads do under PyTorch: between two parallel
/// regions `f` often runs a millisecond of single-threaded work, long enough for
/// rayon to put them to sleep, and waking one costs more than a small region.
///
/// Separate processes on one machine should each set `RAYON_NUM_THREADS` to their
/// share of the cores: a pool spins on every thread it has.
///
/// `f` must not wait for other threads' parallel work on the same pool: with one
/// pool thread (`RAYON_NUM_THREADS=1`) that work could never start. The trainer uses
/// it for a device alone in its process and its machine's cores, never for
/// in-process replicas or a group of processes.
///
/// Callers from outside the pool take turns ([`ONE_AT_A_TIME`]).
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // A pool thread may run f while it waits inside another caller's work: f starts
    // with no weights frozen (see `FrozenWeights`).
    let f = || apart_from_frozen_weights(f);
    if rayon::current_thread_index().is_some() {
        return f();
    }
    // A lock poisoned by a panicking f guards nothing that the panic left broken.
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // rayon::scope runs its closure on a pool thread when called from outside the
    // pool (rayon-core's `in_worker_cold`).
    rayon::scope(|_| {
        let spin = Arc::new(Spin {
            owner: rayon::current_thread_index(),
            admission: AtomicUsize::new(0),
            running: AtomicBool::new(true),
        });
        let copy = spin.clone();
        rayon::spawn_broadcast(move |thread| copy.run(thread.index()));
        spin.admit(rayon::current_num_threads().saturating_sub(1));
        // Stops the spinning when f returns or unwinds.
        struct Stop(Arc<Spin>);
        impl Drop for Stop {
            fn drop(&mut self) {
                self.0.running.store(false, Ordering::Release);
            }
        }
        let _stop = Stop(spin);
        f()
    })
}

/// Held by a thread outside the pool while its [`on_pool`] call runs, so that one
/// such call at a time is on the pool. A pool thread waiting inside one call's
/// parallel work takes whatever work the pool has, another call's whole f
/// included, and runs it on top of the first. burn's backward holds its graph's
/// lock while it runs (and runs parallel work), and the backward of a second
/// training step taken there waits for that lock forever: two tests training at
/// once hung that way.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The spinning of the pool's other threads during one [`on_pool`] call.
///
/// A thread spins only if its copy started before f: f's parallel work did not
/// exist yet, so the spinning cannot sit on top of a piece of that work, which f
/// would then wait for forever (the copy runs wherever the thread next looks for
/// work, which can be inside a piece of work it took from another thread).
struct Spin {
    /// The thread that runs f.
    owner: Option<usize>,
    /// How many copies were admitted; [`CLOSED`] once f is about to start.
    admission: AtomicUsize,
    /// Whether f runs.
    running: AtomicBool,
}

/// Set in [`Spin::admission`] when copies may no longer start spinning.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// How long f waits for the other threads to start spinning: a thread busy with
/// other work (another caller's) is not waited for.
const ADMISSION: Duration = Duration::from_millis(1);

impl Spin {
    /// Waits until `threads` copies are spinning, or for [`ADMISSION`], then closes.
    fn admit(&self, threads: usize) {
        let start = Instant::now();
        while self.admission.load(Ordering::Acquire) < threads && start.elapsed() < ADMISSION {
            std::hint::spin_loop();
        }
        self.admission.fetch_or(CLOSED, Ordering::AcqRel);
    }

    /// The copy on pool thread `index`: while f runs, takes any work there is
    /// (rayon's `yield_now`); idle, it spins 64 rounds, then lets other programs'
    /// threads run (`sched_yield`) between looks.
    fn run(&self, index: usize) {
        if Some(index) == self.owner {
            return;
        }
        let admitted = self
            .admission
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                (a & CLOSED == 0).then_some(a + 1)
            })
            .is_ok();
        if !admitted {
            return;
        }
        let mut idle = 0u32;
        while self.running.load(Ordering::Acquire) {
            if rayon::yield_now() == Some(rayon::Yield::Executed) {
                idle = 0;
            } else if idle < 64 {
                idle += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_pool_thread() {
        assert!(rayon::current_thread_index().is_none());
        assert!(on_pool(rayon::current_thread_index).is_some());
    }

    /// A step handed to a pool thread that waits inside another step's frozen
    /// weights reads its own weights: on_pool runs it apart from the span (here
    /// on_pool is called on a pool thread, where it runs f at once).
    #[test]
    fn a_step_on_the_pool_does_not_see_another_steps_frozen_weights() {
        use crate::model::fused::{tests::KeyedProbe, FrozenWeights};

        let probe = KeyedProbe::new();
        let product = |w| probe.product(w);
        let (inside, handed) = rayon::scope(|_| {
            let _span = FrozenWeights::open();
            let inside = product(&probe.w1);
            (inside, on_pool(|| product(&probe.w2)))
        });
        assert_eq!(inside, [1.0, 2.0]);
        assert_eq!(handed, [2.0, 4.0], "the handed step read its own weight");
    }

    /// Calls in a row and from several threads at once, each with parallel work
    /// inside, all return (a deadlock hangs; the watchdog turns that into a
    /// failure). This is the pattern under which a version without admission
    /// deadlocked in the training tests; the race behind it is rare, so a passing
    /// run does not prove its absence.
    #[test]
    fn calls_in_a_row_and_from_several_threads_at_once_all_return() {
        use rayon::prelude::*;
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let work = |t: u64| {
                (0..300u64)
                    .map(|i| {
                        on_pool(|| (0..2000u64).into_par_iter().map(|x| x * i + t).sum::<u64>())
                    })
                    .sum::<u64>()
            };
            let threads: Vec<_> = (0..3u64)
                .map(|t| std::thread::spawn(move || work(t)))
                .collect();
            let sums: Vec<u64> = threads.into_iter().map(|h| h.join().unwrap()).collect();
            done.send(sums).unwrap();
        });
        let sums = finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("on_pool calls still running after 120 s: a deadlock");
        // sum over i < 300 of (i * 1999 * 2000 / 2 + 2000 t)
        let expected = |t: u64| 1999 * 1000 * (299 * 300 / 2) + 300 * 2000 * t;
        assert_eq!(sums, (0..3u64).map(expected).collect::<Vec<_>>());
    }

    #[test]
    fn nests_and_runs_parallel_work_inside() {
        let sum = on_pool(|| {
            on_pool(|| {
                let (a, b) = rayon::join(|| (0..1000u64).sum::<u64>(), || 1000u64);
                a + b
            })
        });
        assert_eq!(sum, 499_500 + 1000);
    }
}
