//! recursa's plugins, one file each. Each config struct derives
//! [`Plugin`](recursa_core::registry::Plugin) with its name written once, which
//! registers it (an `inventory` entry and a `typetag` config), so linking this
//! crate (`use recursa_plugins as _;`) is all it takes to make them available.
//! A plugin may build on another of this crate: DIS on TRM's [`trm::deep_recursion`],
//! act-q on ACT's [`act::act_halted`].
//!
//! | file              | axis     | name           |
//! |-------------------|----------|----------------|
//! | `trm.rs`          | schedule | `trm`          |
//! | `hrm.rs`          | schedule | `hrm`          |
//! | `dis.rs`          | schedule | `dis`          |
//! | `dis.rs`          | target   | `dis-linear-path` |
//! | `dis_corrupt.rs`  | target   | `dis-corrupt`  |
//! | `direct.rs`       | schedule | `direct`       |
//! | `final_answer.rs` | target   | `final-answer` |
//! | `act.rs`          | halting  | `act-halt`     |
//! | `act_q.rs`        | halting  | `act-q`        |
//! | `fixed.rs`        | halting  | `fixed`        |
//! | `cgar.rs`         | (options of `trm`, `dis`, `final-answer`, `dis-linear-path`) | `curriculum`, `step_decay` |

pub mod act;
pub mod act_q;
pub mod cgar;
pub mod direct;
pub mod dis;
pub mod dis_corrupt;
pub mod final_answer;
pub mod fixed;
pub mod hrm;
pub mod trm;

pub use act::ActHalt;
pub use act_q::ActQ;
pub use direct::Direct;
pub use dis::{Dis, DisLinearPath};
pub use dis_corrupt::{Corruption, DisCorrupt};
pub use final_answer::FinalAnswer;
pub use fixed::FixedSteps;
pub use hrm::Hrm;
pub use trm::Trm;
