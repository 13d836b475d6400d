//! The naive f64 TRM forward (see the crate doc). Shapes in comments are per example.
#![allow(clippy::needless_range_loop)] // index loops mirror the formulas

use std::collections::HashMap;

use recursa_core::model::{NetConfig, PosEncoding};
use recursa_core::weights::HostTensor;

/// The reference's literal for 1/sqrt(2) (not `FRAC_1_SQRT_2`).
#[allow(clippy::approx_constant)]
const LEARNED_POS_SCALE: f64 = 0.707106781;

/// A row-major matrix in f64.
#[derive(Clone, Debug)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub v: Vec<f64>,
}

impl Mat {
    fn zeros(rows: usize, cols: usize) -> Self {
        Mat {
            rows,
            cols,
            v: vec![0.0; rows * cols],
        }
    }
    fn at(&self, r: usize, c: usize) -> f64 {
        self.v[r * self.cols + c]
    }
    fn row(&self, r: usize) -> &[f64] {
        &self.v[r * self.cols..(r + 1) * self.cols]
    }
    fn add(&self, o: &Mat) -> Mat {
        Mat {
            rows: self.rows,
            cols: self.cols,
            v: self.v.iter().zip(&o.v).map(|(a, b)| a + b).collect(),
        }
    }
    fn scale(&self, s: f64) -> Mat {
        Mat {
            rows: self.rows,
            cols: self.cols,
            v: self.v.iter().map(|a| a * s).collect(),
        }
    }
    fn transpose(&self) -> Mat {
        let mut t = Mat::zeros(self.cols, self.rows);
        for r in 0..self.rows {
            for c in 0..self.cols {
                t.v[c * self.rows + r] = self.at(r, c);
            }
        }
        t
    }
}

/// The state dict in f64, reference names and layouts (linear weights `[out, in]`).
pub struct Weights(pub HashMap<String, HostTensor>);

impl Weights {
    fn mat(&self, name: &str) -> Mat {
        let t = self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("no tensor {name}"));
        let (rows, cols) = match t.shape.as_slice() {
            [r, c] => (*r, *c),
            [n] => (1, *n),
            s => panic!("{name}: rank {}", s.len()),
        };
        Mat {
            rows,
            cols,
            v: t.values.iter().map(|&x| x as f64).collect(),
        }
    }
}

/// `x W^T` for `x: [n, in]`, `W: [out, in]`.
fn linear(x: &Mat, w: &Mat) -> Mat {
    assert_eq!(x.cols, w.cols);
    let mut y = Mat::zeros(x.rows, w.rows);
    for i in 0..x.rows {
        for o in 0..w.rows {
            y.v[i * w.rows + o] = x.row(i).iter().zip(w.row(o)).map(|(a, b)| a * b).sum();
        }
    }
    y
}

fn rms_norm_rows(x: &Mat, eps: f64) -> Mat {
    let mut y = x.clone();
    for r in 0..x.rows {
        let ms = x.row(r).iter().map(|a| a * a).sum::<f64>() / x.cols as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for c in 0..x.cols {
            y.v[r * x.cols + c] *= inv;
        }
    }
    y
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn swiglu(x: &Mat, w: &Weights, name: &str) -> Mat {
    let gu = linear(x, &w.mat(&format!("{name}.gate_up_proj.weight")));
    let inter = gu.cols / 2;
    let mut h = Mat::zeros(x.rows, inter);
    for r in 0..x.rows {
        for c in 0..inter {
            h.v[r * inter + c] = silu(gu.at(r, c)) * gu.at(r, inter + c);
        }
    }
    // ConvSwiGLU (URM): silu(Conv1d(inter, inter, k, groups=inter, padding=k//2)(h)[:rows]).
    if w.0.contains_key(&format!("{name}.conv.weight")) {
        let (cw, cb) = (
            w.mat(&format!("{name}.conv.weight")),
            w.mat(&format!("{name}.conv.bias")),
        );
        let k = cw.cols;
        let mut out = Mat::zeros(h.rows, inter);
        for t in 0..h.rows {
            for c in 0..inter {
                let mut acc = cb.at(0, c);
                for j in 0..k {
                    let src = t as isize + j as isize - (k / 2) as isize;
                    if (0..h.rows as isize).contains(&src) {
                        acc += cw.at(c, j) * h.at(src as usize, c);
                    }
                }
                out.v[t * inter + c] = silu(acc);
            }
        }
        h = out;
    }
    linear(&h, &w.mat(&format!("{name}.down_proj.weight")))
}

fn rope(x: &[f64], pos: usize, theta: f64) -> Vec<f64> {
    let d = x.len();
    let half = d / 2;
    (0..d)
        .map(|j| {
            let i = j % half;
            let angle = pos as f64 / theta.powf((2 * i) as f64 / d as f64);
            let rotated = if j < half { -x[j + half] } else { x[j - half] };
            x[j] * angle.cos() + rotated * angle.sin()
        })
        .collect()
}

fn attention(h: &Mat, w: &Weights, name: &str, c: &NetConfig) -> Mat {
    let qkv = linear(h, &w.mat(&format!("{name}.qkv_proj.weight")));
    let (heads, d, len) = (c.num_heads, c.hidden_size / c.num_heads, h.rows);
    let use_rope = c.pos_encodings == PosEncoding::Rope;
    let mut out = Mat::zeros(len, heads * d);
    for head in 0..heads {
        let part = |which: usize, p: usize| -> Vec<f64> {
            let start = (which * heads + head) * d;
            let v = qkv.row(p)[start..start + d].to_vec();
            if use_rope && which < 2 {
                rope(&v, p, c.rope_theta)
            } else {
                v
            }
        };
        let q: Vec<_> = (0..len).map(|p| part(0, p)).collect();
        let k: Vec<_> = (0..len).map(|p| part(1, p)).collect();
        let v: Vec<_> = (0..len).map(|p| part(2, p)).collect();
        for i in 0..len {
            let scores: Vec<f64> = (0..len)
                .map(|j| {
                    q[i].iter().zip(&k[j]).map(|(a, b)| a * b).sum::<f64>() / (d as f64).sqrt()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for t in 0..d {
                out.v[i * heads * d + head * d + t] = (0..len).map(|j| e[j] / z * v[j][t]).sum();
            }
        }
    }
    linear(&out, &w.mat(&format!("{name}.o_proj.weight")))
}

fn block(h: &Mat, w: &Weights, name: &str, c: &NetConfig) -> Mat {
    let eps = c.rms_norm_eps;
    let h = if c.mlp_t {
        let t = h.transpose(); // [hidden, positions]
        rms_norm_rows(&t.add(&swiglu(&t, w, &format!("{name}.mlp_t"))), eps).transpose()
    } else {
        rms_norm_rows(
            &h.add(&attention(h, w, &format!("{name}.self_attn"), c)),
            eps,
        )
    };
    rms_norm_rows(&h.add(&swiglu(&h, w, &format!("{name}.mlp"))), eps)
}

/// `L_level(h, injection)`: add the injection, then every block.
pub fn level(h: &Mat, injection: &Mat, w: &Weights, c: &NetConfig) -> Mat {
    let mut h = h.add(injection);
    for i in 0..c.l_layers {
        h = block(&h, w, &format!("inner.L_level.layers.{i}"), c);
    }
    h
}

/// The embedded question x for one example: `[positions, hidden]`.
pub fn input_embeddings(tokens: &[i32], puzzle_id: i32, w: &Weights, c: &NetConfig) -> Mat {
    let table = w.mat("inner.embed_tokens.embedding_weight");
    let (prefix, hidden) = (c.prefix_len(), c.hidden_size);
    let mut x = Mat::zeros(prefix + tokens.len(), hidden);
    if c.puzzle_emb_ndim > 0 {
        let p = w.mat("inner.puzzle_emb.weights");
        for (i, &value) in p.row(puzzle_id as usize).iter().enumerate() {
            x.v[i] = value; // flat prefix: zero-padded to prefix*hidden
        }
    }
    for (s, &tok) in tokens.iter().enumerate() {
        let dst = (prefix + s) * hidden;
        x.v[dst..dst + hidden].copy_from_slice(table.row(tok as usize));
    }
    if c.pos_encodings == PosEncoding::Learned {
        x = x
            .add(&w.mat("inner.embed_pos.embedding_weight"))
            .scale(LEARNED_POS_SCALE);
    }
    x.scale((hidden as f64).sqrt())
}

/// Output of one supervision step for one example.
pub struct StepOut {
    pub y: Mat,
    pub z: Mat,
    /// `[seq_len, vocab]`
    pub logits: Mat,
    pub q_halt: f64,
    pub q_continue: f64,
}

/// One TRM supervision step from `(y, z)`: T cycles of (n z-updates, one y-update).
pub fn trm_step(
    y: &Mat,
    z: &Mat,
    x: &Mat,
    w: &Weights,
    c: &NetConfig,
    h_cycles: usize,
    l_cycles: usize,
) -> StepOut {
    let (mut y, mut z) = (y.clone(), z.clone());
    for _ in 0..h_cycles {
        for _ in 0..l_cycles {
            z = level(&z, &y.add(x), w, c);
        }
        y = level(&y, &z, w, c);
    }
    let all = linear(&y, &w.mat("inner.lm_head.weight"));
    let prefix = c.prefix_len();
    let logits = Mat {
        rows: c.seq_len,
        cols: all.cols,
        v: all.v[prefix * all.cols..].to_vec(),
    };
    let first = Mat {
        rows: 1,
        cols: c.hidden_size,
        v: y.row(0).to_vec(),
    };
    let q = linear(&first, &w.mat("inner.q_head.weight"));
    let b = w.mat("inner.q_head.bias");
    StepOut {
        q_halt: q.v[0] + b.v[0],
        q_continue: q.v[1] + b.v[1],
        y,
        z,
        logits,
    }
}

/// The initial latents: `H_init` / `L_init` broadcast over positions.
pub fn initial_latents(w: &Weights, c: &NetConfig) -> (Mat, Mat) {
    let broadcast = |name: &str| {
        let init = w.mat(name);
        let mut m = Mat::zeros(c.total_len(), c.hidden_size);
        for r in 0..m.rows {
            m.v[r * m.cols..(r + 1) * m.cols].copy_from_slice(&init.v);
        }
        m
    };
    (broadcast("inner.H_init"), broadcast("inner.L_init"))
}
