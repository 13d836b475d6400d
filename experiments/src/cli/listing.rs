//! `recursa plugins` and `recursa backends`: what this binary has.

use recursa_core::registry::{self, Axis};

/// Every registered plugin, by axis, with its doc line and fields, then the choices
/// that are options of the network and of evaluation.
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
    // Choices that are not plugins: the network's MLP and the evaluation rollout.
    let sections: [(&str, &[(&str, &str)]); 2] = [
        (
            "[net] mlp_kind",
            &[
                ("swiglu", "down(silu(gate) * up) (TRM, HRM, DIS; the default)"),
                (
                    "conv-swiglu",
                    "URM: a depthwise convolution over positions (width net.conv_kernel, default 2) and a SiLU before down",
                ),
            ],
        ),
        (
            "[eval]",
            &[
                (
                    "trajectories",
                    "PTRM: K rollouts per example with noise on z_H, the largest final q_halt kept (default 1)",
                ),
                (
                    "latent_noise",
                    "sigma of that noise, added before every supervision step (default 0)",
                ),
                ("noise_seed", "seeds the noise (default 0)"),
            ],
        ),
    ];
    for (i, (title, choices)) in sections.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{title}");
        for (name, doc) in *choices {
            println!("  {name:<14} {doc}");
        }
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
