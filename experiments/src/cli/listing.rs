//! `recursa plugins` and `recursa backends`: what this binary has.

use recursa_core::registry::{self, Axis};

/// Every registered plugin, by axis, with its doc line and fields.
pub fn plugins() {
    for axis in Axis::ALL {
        println!("[{}]", axis.key());
        for p in registry::plugins().into_iter().filter(|p| p.axis == axis) {
            println!("  {:<14} {}", p.name, p.doc);
            for f in p.fields {
                println!("  {:<14}   {} : {}", "", f.name, f.doc);
            }
        }
        println!();
    }
}

/// Every backend, whether it is compiled in, and whether its device answers.
pub fn backends() {
    println!("{:<6} {:<10} {:<9} device", "name", "feature", "compiled");
    for b in recursa_backends::backends() {
        let device = if b.compiled {
            match recursa_backends::probe(b.name) {
                Ok(d) => format!("ok: {d}"),
                Err(e) => format!("unavailable: {e}"),
            }
        } else {
            "-".into()
        };
        println!(
            "{:<6} {:<10} {:<9} {}",
            b.name,
            b.feature,
            if b.compiled { "yes" } else { "no" },
            device
        );
        println!("       {}", b.doc);
    }
}
