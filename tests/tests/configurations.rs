//! Configurations the reference fixtures do not cover, checked against the naive
//! f64 implementation (`tests/src/naive.rs`, itself checked against the reference):
//! mlp_t, learned and no positions, puzzle_emb_ndim != hidden, puzzle_emb_len 0,
//! no puzzle embedding, odd sequence lengths, H_cycles 1..=3 x L_cycles 1..=6.

use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recursa_core::model::Net;
use recursa_core::model::{MlpKind, NetConfig, PosEncoding};
use recursa_core::state::Batch;
use recursa_core::step::{LoopedModel, StepContext};
use recursa_core::weights::{net_state_dict, save_net_file};
use recursa_core::{Device, B};
use recursa_plugins::{ActHalt, FinalAnswer, Trm};
use recursa_tests::naive;

fn cpu() -> Device {
    recursa_backends::device("cpu").unwrap()
}

fn base() -> NetConfig {
    NetConfig {
        seq_len: 9,
        vocab_size: 7,
        num_puzzle_identifiers: 5,
        puzzle_emb_ndim: 32,
        puzzle_emb_len: 0,
        hidden_size: 32,
        num_heads: 4,
        expansion: 4.0,
        l_layers: 2,
        h_layers: 0,
        pos_encodings: PosEncoding::Rope,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        mlp_t: false,
        step_embeddings: 0,
        mlp_kind: MlpKind::Swiglu,
        conv_kernel: 2,
    }
}

/// A network with every tensor random (see [`recursa_tests::randomize_zero_inits`]).
fn random_net(config: &NetConfig, seed: u64) -> Net {
    let mut net = Net::new(config, seed, &cpu()).unwrap();
    recursa_tests::randomize_zero_inits(&mut net, seed + 1000);
    net
}

fn random_batch(config: &NetConfig, rows: usize, seed: u64) -> (Vec<i32>, Vec<i32>, Batch) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tokens: Vec<i32> = (0..rows * config.seq_len)
        .map(|_| rng.random_range(0..config.vocab_size as i32))
        .collect();
    let ids: Vec<i32> = (0..rows)
        .map(|_| rng.random_range(0..config.num_puzzle_identifiers.max(1) as i32))
        .collect();
    let device = cpu();
    let batch = Batch {
        inputs: Tensor::<B, 2, Int>::from_data(
            TensorData::new(tokens.clone(), [rows, config.seq_len]),
            &device,
        ),
        labels: Tensor::<B, 2, Int>::from_data(
            TensorData::new(tokens.clone(), [rows, config.seq_len]),
            &device,
        ),
        puzzle_identifiers: Tensor::<B, 1, Int>::from_data(
            TensorData::new(ids.clone(), [rows]),
            &device,
        ),
    };
    (tokens, ids, batch)
}

fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= atol + 1e-4 * w.abs(),
            "{what}[{i}]: {g} vs naive {w}"
        );
    }
}

/// Runs `steps` eval supervision steps with recursa and with the naive forward and compares.
fn check(config: &NetConfig, h_cycles: usize, l_cycles: usize, steps: usize) {
    let atol = if config.mlp_t { 1e-3 } else { 1e-4 };
    let net = random_net(config, 7);
    let state = net_state_dict(&net);
    let model = LoopedModel::new(
        net,
        Box::new(Trm::new(h_cycles, l_cycles)),
        Box::new(FinalAnswer::default()),
        Box::new(ActHalt {
            max_steps: steps + 1,
            exploration: 0.0,
            no_act_continue: true,
        }),
    )
    .unwrap();
    let rows = 2;
    let (tokens, ids, batch) = random_batch(config, rows, 11);
    let mut carry = model.initial_carry(&batch);
    let mut ctx = StepContext::eval();
    let w = naive::Weights(state);
    let mut latents: Vec<_> = (0..rows)
        .map(|_| naive::initial_latents(&w, config))
        .collect();
    for step in 1..=steps {
        let (next, out) = model.step(carry, &batch, &mut ctx);
        carry = next;
        let logits = out.logits.into_data().to_vec::<f32>().unwrap();
        let z_h = carry
            .latents
            .z_h
            .clone()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let z_l = carry
            .latents
            .z_l
            .clone()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let q = out.q_halt_logits.into_data().to_vec::<f32>().unwrap();
        let (nl, nz) = (
            config.seq_len * config.vocab_size,
            config.total_len() * config.hidden_size,
        );
        for b in 0..rows {
            let x = naive::input_embeddings(
                &tokens[b * config.seq_len..(b + 1) * config.seq_len],
                ids[b],
                &w,
                config,
            );
            let (y, z) = &latents[b];
            let o = naive::trm_step(y, z, &x, &w, config, h_cycles, l_cycles);
            let what = format!("{config:?} T={h_cycles} n={l_cycles} step {step} row {b}");
            assert_close(
                &format!("{what} logits"),
                &logits[b * nl..(b + 1) * nl],
                &o.logits.v,
                atol,
            );
            assert_close(
                &format!("{what} z_H"),
                &z_h[b * nz..(b + 1) * nz],
                &o.y.v,
                atol,
            );
            assert_close(
                &format!("{what} z_L"),
                &z_l[b * nz..(b + 1) * nz],
                &o.z.v,
                atol,
            );
            assert_close(&format!("{what} q_halt"), &q[b..b + 1], &[o.q_halt], 5e-5);
            latents[b] = (o.y, o.z);
        }
        let steps_now = carry.steps.clone().into_data().to_vec::<i32>().unwrap();
        assert_eq!(steps_now, vec![step as i32; rows]);
    }
}

#[test]
fn rope_with_one_prefix_position_and_odd_sequence() {
    check(&base(), 2, 2, 2);
}

#[test]
fn conv_swiglu_matches_a_direct_computation() {
    // URM's ConvSwiGLU in every block: k = 2 (causal) and k = 3 (centred).
    for conv_kernel in [2, 3] {
        let c = NetConfig {
            mlp_kind: MlpKind::ConvSwiglu,
            conv_kernel,
            ..base()
        };
        check(&c, 2, 2, 2);
    }
}

#[test]
fn mlp_t_without_positions() {
    // Prefix from ceil-div: puzzle_emb_ndim 48 over hidden 32 = 2 positions; seq 13 (odd).
    let c = NetConfig {
        mlp_t: true,
        pos_encodings: PosEncoding::None,
        puzzle_emb_ndim: 48,
        seq_len: 13,
        ..base()
    };
    assert_eq!(c.prefix_len(), 2);
    check(&c, 2, 3, 2);
}

#[test]
fn learned_positions_with_a_padded_puzzle_prefix() {
    // puzzle_emb_ndim 20 < hidden: zero-padded into 3 explicit prefix positions.
    let c = NetConfig {
        pos_encodings: PosEncoding::Learned,
        puzzle_emb_ndim: 20,
        puzzle_emb_len: 3,
        ..base()
    };
    assert_eq!(c.total_len(), 12);
    check(&c, 2, 2, 2);
}

#[test]
fn no_positions_with_attention() {
    check(
        &NetConfig {
            pos_encodings: PosEncoding::None,
            seq_len: 6,
            ..base()
        },
        1,
        2,
        2,
    );
}

#[test]
fn without_puzzle_embedding() {
    let c = NetConfig {
        puzzle_emb_ndim: 0,
        puzzle_emb_len: 16,
        ..base()
    };
    assert_eq!(c.prefix_len(), 0);
    check(&c, 2, 1, 1);
}

#[test]
fn every_cycle_count_from_1x1_to_3x6() {
    let c = NetConfig {
        hidden_size: 16,
        num_heads: 2,
        l_layers: 1,
        seq_len: 5,
        puzzle_emb_ndim: 16,
        ..base()
    };
    for h_cycles in 1..=3 {
        for l_cycles in 1..=6 {
            check(&c, h_cycles, l_cycles, 1);
        }
    }
}

#[test]
fn weights_round_trip_through_safetensors() {
    let c = NetConfig {
        pos_encodings: PosEncoding::Learned,
        mlp_t: true,
        ..base()
    };
    let net = random_net(&c, 3);
    let dir = std::env::temp_dir().join(format!("recursa-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("net.safetensors");
    save_net_file(&net, &path, None).unwrap();
    let mut other = Net::new(&c, 99, &cpu()).unwrap();
    recursa_core::weights::load_net_file(&mut other, &path).unwrap();
    let (a, b) = (net_state_dict(&net), net_state_dict(&other));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(t.values, b[name].values, "{name}");
    }
    // No temporary file is left next to the checkpoint.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn weights_of_another_configuration_are_refused_by_name() {
    let small = random_net(&base(), 1);
    let dir = std::env::temp_dir().join(format!("recursa-shape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("small.safetensors");
    save_net_file(&small, &path, None).unwrap();
    let mut wide = Net::new(
        &NetConfig {
            hidden_size: 64,
            puzzle_emb_ndim: 64,
            ..base()
        },
        0,
        &cpu(),
    )
    .unwrap();
    let e = recursa_core::weights::load_net_file(&mut wide, &path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("small.safetensors")
            && e.contains("inner.embed_tokens.embedding_weight")
            && e.contains("shape"),
        "{e}"
    );
    let mut deeper = Net::new(
        &NetConfig {
            l_layers: 3,
            ..base()
        },
        0,
        &cpu(),
    )
    .unwrap();
    let e = recursa_core::weights::load_net_file(&mut deeper, &path)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("inner.L_level.layers.2") && e.contains("missing"),
        "{e}"
    );
    let mut learned = Net::new(
        &NetConfig {
            l_layers: 1,
            ..base()
        },
        0,
        &cpu(),
    )
    .unwrap();
    let e = recursa_core::weights::load_net_file(&mut learned, &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("another configuration"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
