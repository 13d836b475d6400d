//! `train.micro_batches = "auto"`: the fewest micro-batches whose step fits in the
//! memory the device has free.
//!
//! A step's memory grows linearly with its rows: at its peak it holds
//! `fixed + per_row * rows` more than before it. Two probes (forward and backward of
//! the first `s1 < s2` rows of the first batch at the deepest stage of a depth
//! curriculum, nothing updated) give `per_row` from the difference of their peaks
//! and `fixed` from the first. The count is the smallest divisor `m` of the rank's
//! rows whose micro-batch fits the budget (90% of the memory free before the
//! probes, or `train.auto_memory_mb`) together with the carries of the other
//! micro-batches, which stay alive through the step, and the optimizer state the
//! first update allocates.
//!
//! What the devices report:
//! * CPU backends (`cpu`, `ndarray`): the bytes live on the heap and their peak, as
//!   the global allocator counts them ([`count_heap_with`]; the `recursa` binary's
//!   does), and free: the system's `MemAvailable` (or the cgroup's limit less its
//!   usage, if lower) plus the anonymous memory the process holds beyond its live
//!   bytes (freed pages its allocator keeps). Without a counting allocator, the
//!   resident memory (`VmRSS`) and its peak (`VmHWM`, reset before each probe
//!   through `/proc/self/clear_refs`), in which freed pages the allocator keeps
//!   hide the probes' growth. Linux only.
//! * CUDA: the bytes in use in burn-cuda's memory pool with their padding (cubecl's
//!   count for the calling thread's stream, the one its steps run on), and free:
//!   the driver's free memory (`cuMemGetInfo`) plus what the pool holds unused. The
//!   pool tracks no peak, so each probe reads it after the forward and after the
//!   backward; the peak within the backward, where activations and gradients both
//!   live, is not seen, and the budget's 10% margin has to cover it.
//! * wgpu and libtorch report nothing: give `micro_batches` a count there.

use std::sync::OnceLock;

use crate::{is_cpu, Device};

/// The heap as the process's global allocator counts it.
#[derive(Clone, Copy, Debug)]
pub struct HeapCounter {
    /// Bytes allocated and not freed.
    pub live: fn() -> u64,
    /// The most `live` has been since `reset_peak`.
    pub peak: fn() -> u64,
    /// Sets the peak to `live` now.
    pub reset_peak: fn(),
}

static HEAP: OnceLock<HeapCounter> = OnceLock::new();

/// Measures CPU devices by the heap's counts rather than the resident memory; the
/// first call wins.
pub fn count_heap_with(counter: HeapCounter) {
    let _ = HEAP.set(counter);
}

/// A device's memory now, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryReading {
    /// Held by this process (CPU) or in use in the device's pool (CUDA).
    pub held: u64,
    /// What more could be taken.
    pub free: u64,
}

/// The device's memory now, or `None` where it reports none.
pub fn reading(device: &Device) -> Option<MemoryReading> {
    if is_cpu(device) {
        return cpu::reading();
    }
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => cuda::reading(d),
        _ => None,
    }
}

/// Whether [`peak_held`] counts the live bytes at the peak (CPU devices with a
/// counting allocator), not blocks a pool or allocator keeps once taken. Where it
/// does, a first probe that is not measured lets thread-local scratch buffers grow
/// to their size first, which otherwise lands in whichever probe the thread
/// timing picks; where it does not, that probe would hide the others' growth.
pub fn counts_live(device: &Device) -> bool {
    is_cpu(device) && HEAP.get().is_some()
}

/// Starts a peak measurement: [`peak_held`] then reports the most held since.
pub fn start_peak(device: &Device) {
    if is_cpu(device) {
        cpu::reset_peak();
    }
}

/// The most memory held since [`start_peak`], where the device tracks it (CPU);
/// `None` elsewhere.
pub fn peak_held(device: &Device) -> Option<u64> {
    is_cpu(device).then(cpu::peak).flatten()
}

/// One probe: a forward and backward of `rows` rows, and the memory held at its peak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub rows: usize,
    pub peak: u64,
}

/// What the probes measured, besides their peaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Costs {
    /// Held before the probes.
    pub base: u64,
    /// Bytes of one row's carry (kept for every micro-batch through a step).
    pub carry_per_row: u64,
    /// Bytes the first update adds (summed gradients, optimizer moments, EMA).
    pub optimizer: u64,
}

/// The count chosen, and what it was chosen from (for the run's log).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    pub micro_batches: usize,
    /// Bytes each row of a micro-batch adds at the step's peak.
    pub per_row: u64,
    /// Bytes the step adds at its peak with this count, optimizer state and the
    /// other micro-batches' carries included.
    pub need: u64,
    /// Bytes it may add.
    pub budget: u64,
    /// Bytes the first step added at its peak, where [`counts_live`] (a check of `need`).
    pub first_step: Option<u64>,
}

/// The two probe sizes for a rank's `rows`: `rows / 32` (at least 1) and twice that
/// (equal only when `rows` is 1). They need not divide `rows`.
pub fn probe_rows(rows: usize) -> [usize; 2] {
    let s1 = (rows / 32).clamp(1, rows.max(1));
    [s1, (2 * s1).min(rows.max(1))]
}

/// The fewest micro-batches of `rows` that fit `budget` bytes, given two probes
/// and the other `costs`. `Err` says why none fits, or why the probes cannot tell.
pub fn choose(rows: usize, probes: [Probe; 2], costs: Costs, budget: u64) -> Result<Plan, String> {
    let [small, large] = probes;
    let per_row = if large.rows > small.rows {
        let grew = large.peak.saturating_sub(small.peak);
        if grew == 0 {
            return Err(format!(
                "probes of {} and {} rows took the same memory, so the device's figures cannot tell what a row takes",
                small.rows, large.rows
            ));
        }
        grew / (large.rows - small.rows) as u64
    } else {
        0
    };
    let fixed = small
        .peak
        .saturating_sub(costs.base)
        .saturating_sub(per_row * small.rows as u64);
    let need = |m: usize| {
        let micro = (rows / m) as u64;
        fixed + per_row * micro + costs.carry_per_row * (rows as u64 - micro) + costs.optimizer
    };
    let mb = |b: u64| b as f64 / 1e6;
    (1..=rows)
        .filter(|m| rows.is_multiple_of(*m))
        .find(|&m| need(m) <= budget)
        .map(|m| Plan {
            micro_batches: m,
            per_row,
            need: need(m),
            budget,
            first_step: None,
        })
        .ok_or_else(|| {
            format!(
                "one example per micro-batch needs {:.0} MB ({:.1} MB per example, {:.0} MB fixed), more than the {:.0} MB it may use",
                mb(need(rows)),
                mb(per_row),
                mb(fixed + costs.optimizer),
                mb(budget)
            )
        })
}

mod cpu {
    //! The process's memory from `/proc` (Linux).
    use super::MemoryReading;

    /// A `Name:   N kB` field of a `/proc` file, in bytes.
    fn field(file: &str, name: &str) -> Option<u64> {
        let text = std::fs::read_to_string(file).ok()?;
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// The cgroup's memory limit less its usage (v2, then v1), where a limit is
    /// set: usage without the inactive page cache, which the kernel reclaims (as
    /// `MemAvailable` counts it free).
    pub(super) fn cgroup_room(root: &str) -> Option<u64> {
        // v2's "max" (no limit) does not parse: no room to take from it.
        let read = |file: String| -> Option<u64> {
            std::fs::read_to_string(file).ok()?.trim().parse().ok()
        };
        let stat = |file: String, key: &str| -> u64 {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let mut lines = text.lines().map(|l| l.split(' '));
            lines
                .find_map(|mut l| (l.next() == Some(key)).then(|| l.next()?.parse().ok())?)
                .unwrap_or(0)
        };
        [
            ("", "memory.max", "memory.current", "inactive_file"),
            (
                "memory/",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
                "total_inactive_file",
            ),
        ]
        .iter()
        .find_map(|(dir, limit, usage, cache)| {
            let used = read(format!("{root}/{dir}{usage}"))?
                .saturating_sub(stat(format!("{root}/{dir}memory.stat"), cache));
            Some(read(format!("{root}/{dir}{limit}"))?.saturating_sub(used))
        })
    }

    pub fn reading() -> Option<MemoryReading> {
        let mut available = field("/proc/meminfo", "MemAvailable:")?;
        if let Some(room) = cgroup_room("/sys/fs/cgroup") {
            available = available.min(room);
        }
        Some(match super::HEAP.get() {
            Some(heap) => {
                let live = (heap.live)();
                let anonymous = field("/proc/self/status", "RssAnon:").unwrap_or(0);
                MemoryReading {
                    held: live,
                    free: available + anonymous.saturating_sub(live),
                }
            }
            None => MemoryReading {
                held: field("/proc/self/status", "VmRSS:")?,
                free: available,
            },
        })
    }

    /// Sets the peak to the memory held now.
    pub fn reset_peak() {
        match super::HEAP.get() {
            Some(heap) => (heap.reset_peak)(),
            // Where /proc/self/clear_refs is not writable the peak stays the
            // process's peak so far: both probes may then report it, and
            // `choose` refuses probes that took the same memory.
            None => {
                let _ = std::fs::write("/proc/self/clear_refs", "5");
            }
        }
    }

    pub fn peak() -> Option<u64> {
        match super::HEAP.get() {
            Some(heap) => Some((heap.peak)()),
            None => field("/proc/self/status", "VmHWM:"),
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! burn-cuda's pool (cubecl's client) and the CUDA driver's free memory.
    use cubecl::Runtime;

    use super::MemoryReading;

    pub fn reading(device: &cubecl::cuda::CudaDevice) -> Option<MemoryReading> {
        let pool = cubecl::cuda::CudaRuntime::client(device)
            .memory_usage()
            .ok()?;
        // The primary context, which burn-cuda uses too.
        let context = cudarc::driver::CudaContext::new(device.index).ok()?;
        let (free, _total) = context.mem_get_info().ok()?;
        // Padding is held as surely as the bytes it pads.
        let held = pool.bytes_in_use + pool.bytes_padding;
        Some(MemoryReading {
            held,
            free: free as u64 + pool.bytes_reserved.saturating_sub(held),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    #[test]
    fn probes_are_a_32nd_and_a_16th_of_the_rows() {
        assert_eq!(probe_rows(768), [24, 48]);
        assert_eq!(probe_rows(16), [1, 2]);
        assert_eq!(probe_rows(134), [4, 8]);
        assert_eq!(probe_rows(7), [1, 2]);
        assert_eq!(probe_rows(1), [1, 1]);
    }

    #[test]
    fn the_count_is_the_fewest_that_fit() {
        // 10 MB fixed, 2 MB per row; 64 rows.
        let probes = [
            Probe {
                rows: 2,
                peak: 1000 * MB + 10 * MB + 4 * MB,
            },
            Probe {
                rows: 4,
                peak: 1000 * MB + 10 * MB + 8 * MB,
            },
        ];
        let costs = Costs {
            base: 1000 * MB,
            carry_per_row: 0,
            optimizer: 6 * MB,
        };
        let plan = |budget| choose(64, probes, costs, budget);
        // The whole batch: 10 + 128 + 6 = 144 MB.
        assert_eq!(plan(144 * MB).unwrap().micro_batches, 1);
        assert_eq!(plan(144 * MB).unwrap().per_row, 2 * MB);
        // One MB short: halves (10 + 64 + 6 = 80 MB).
        assert_eq!(plan(143 * MB).unwrap().micro_batches, 2);
        assert_eq!(plan(143 * MB).unwrap().need, 80 * MB);
        // 48 MB: 10 + 32 + 6 fits with 4 micro-batches of 16.
        assert_eq!(plan(48 * MB).unwrap().micro_batches, 4);
        // Not even one row.
        let err = plan(17 * MB).unwrap_err();
        assert!(
            err.contains("18 MB") && err.contains("2.0 MB per example"),
            "{err}"
        );
        // The other micro-batches' carries, half a MB a row: 80 MB no longer
        // takes halves (10 + 64 + 16 + 6 = 96 MB) but quarters (10 + 32 + 24 + 6).
        let carries = Costs {
            carry_per_row: MB / 2,
            ..costs
        };
        let plan = choose(64, probes, carries, 80 * MB).unwrap();
        assert_eq!((plan.micro_batches, plan.need), (4, 72 * MB));
    }

    #[test]
    fn probes_that_took_the_same_memory_choose_nothing() {
        let probe = |rows| Probe { rows, peak: 5 * MB };
        let costs = Costs {
            base: 0,
            carry_per_row: 0,
            optimizer: 0,
        };
        let err = choose(64, [probe(2), probe(4)], costs, 100 * MB).unwrap_err();
        assert!(err.contains("took the same memory"), "{err}");
    }

    #[test]
    fn the_count_divides_the_rows() {
        let probes = [
            Probe { rows: 1, peak: MB },
            Probe {
                rows: 2,
                peak: 2 * MB,
            },
        ];
        // 10 rows at 1 MB each: a budget of 4 MB takes micro-batches of 2 rows, not 4.
        let costs = Costs {
            base: 0,
            carry_per_row: 0,
            optimizer: 0,
        };
        let plan = choose(10, probes, costs, 4 * MB).unwrap();
        assert_eq!((plan.micro_batches, plan.need), (5, 2 * MB));
    }

    #[test]
    fn a_cgroup_limit_leaves_its_room_less_usage_without_inactive_cache() {
        let dir = std::env::temp_dir().join(format!("recursa-cgroup-{}", std::process::id()));
        let write = |file: &str, text: &str| {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        let root = dir.to_str().unwrap();
        // No files: no limit.
        assert_eq!(cpu::cgroup_room(root), None);
        // v1: 1000 limit, 700 used of which 300 is inactive cache.
        write("memory/memory.limit_in_bytes", "1000\n");
        write("memory/memory.usage_in_bytes", "700\n");
        write("memory/memory.stat", "cache 400\ntotal_inactive_file 300\n");
        assert_eq!(cpu::cgroup_room(root), Some(600));
        // v2 first; its "max" (no limit) falls back to v1's files where they exist.
        write("memory.current", "500\n");
        write(
            "memory.stat",
            "anon 100\ninactive_file 200\nactive_file 50\n",
        );
        write("memory.max", "900\n");
        assert_eq!(cpu::cgroup_room(root), Some(600));
        write("memory.max", "max\n");
        assert_eq!(cpu::cgroup_room(root), Some(600), "v1's figures");
        std::fs::remove_dir_all(&dir).ok();
    }
}
