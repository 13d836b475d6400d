//! The `recursa` command line's library: what the subcommands do, callable from tests.
//!
//! * [`verify`]: check this implementation against a reference fixture file.
//! * [`plot`]: training curves of runs as a PNG and a CSV.

pub mod bench;
pub mod plot;
pub mod tasks;
pub mod train;
pub mod verify;
pub mod verify_dis;
pub mod verify_train;

// Link every plugin into whatever uses this library (inventory/typetag registrations).
use recursa_plugins as _;
