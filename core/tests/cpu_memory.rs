//! The CPU's memory readings for `micro_batches = "auto"` without a counting
//! allocator: the resident memory and its peak from `/proc`. A test binary of its
//! own, so that no other test allocates or frees while the peak is measured.

use recursa_core::train::memory::{peak_held, reading, start_peak};
use recursa_core::Device;

#[test]
fn the_cpu_reports_its_memory_and_peak() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let device = Device::Flex(Default::default());
    let before = reading(&device).expect("Linux has /proc");
    assert!(before.held > 0 && before.free > 0);
    start_peak(&device);
    let block = std::hint::black_box(vec![1u8; 64 << 20]);
    let peak = peak_held(&device).expect("Linux has /proc");
    assert!(
        peak >= before.held + (60 << 20),
        "{peak} vs {}",
        before.held
    );
    drop(block);
}
