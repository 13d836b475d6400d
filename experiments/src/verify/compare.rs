//! What every fixture check shares: the fixture file, reading its tensors, comparing
//! a tensor (or a scalar, or every gradient) with the stored one, and the model a
//! fixture describes.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};
use recursa_core::model::names::{visit_net, Layout, Role, WeightVisitor};
use recursa_core::model::ReasoningNet;
use recursa_core::reference::ReferenceConfig;
use recursa_core::state::{Batch, StepOutput};
use recursa_core::step::LoopedModel;
use recursa_core::weights::{load_net, read_f32};
use recursa_core::{Device, Error, Result, B};
use recursa_plugins::{
    ActHalt, ActQ, Direct, Dis, DisLinearPath, FinalAnswer, FixedSteps, Hrm, Trm,
};
use safetensors::{Dtype, SafeTensors};
use serde::Serialize;

/// How a tensor is compared.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Tolerance {
    /// `|a - b| <= atol + rtol * |b|` element-wise.
    Close { atol: f64, rtol: f64 },
    /// Equal element for element (discrete outputs).
    Exact,
}

/// The result of comparing one tensor with the reference.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub tensor: String,
    pub shape: Vec<usize>,
    pub max_abs_err: f64,
    pub max_rel_err: f64,
    /// Elements outside the tolerance (or unequal, for exact comparisons).
    pub mismatches: usize,
    pub tolerance: Tolerance,
    pub ok: bool,
    /// What was checked, for checks that are not one tensor (dataset and evaluator fixtures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A fixture file: its tensors, metadata, kind and reference config.
pub struct Fixture {
    pub file: String,
    pub bytes: Vec<u8>,
    pub metadata: HashMap<String, String>,
    pub kind: String,
}

impl Fixture {
    /// Reads a fixture and its `kind` from the safetensors metadata.
    pub fn open(path: &Path) -> Result<Self> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::Input(format!("{file}: not a safetensors file: {e}")))?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        let fixture: serde_json::Value = metadata
            .get("fixture")
            .and_then(|f| serde_json::from_str(f).ok())
            .ok_or_else(|| Error::Input(format!("{file}: no `fixture` JSON in the safetensors metadata; is this a reference fixture?")))?;
        let kind = fixture
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| Error::Input(format!("{file}: fixture metadata has no `kind`")))?
            .to_string();
        Ok(Fixture {
            file,
            bytes,
            metadata,
            kind,
        })
    }

    pub fn tensors(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes)
            .map_err(|e| Error::Input(format!("{}: {e}", self.file)))
    }

    /// The reference model config stored with the fixture.
    pub fn config(&self) -> Result<ReferenceConfig> {
        let json = self
            .metadata
            .get("config")
            .ok_or_else(|| Error::Input(format!("{}: no `config` in the metadata", self.file)))?;
        ReferenceConfig::from_json(json, &self.file)
    }
}

/// An integer tensor (I32, or I64/U8) from a fixture, with its shape.
pub fn read_i32(st: &SafeTensors, file: &str, name: &str) -> Result<(Vec<usize>, Vec<i32>)> {
    let err = |m: String| Error::Weights {
        file: file.into(),
        name: name.into(),
        message: m,
    };
    let view = st.tensor(name).map_err(|_| err("missing".into()))?;
    let b = view.data();
    let values = match view.dtype() {
        Dtype::I32 => b
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::I64 => b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("chunk of 8")) as i32)
            .collect(),
        Dtype::U8 => b.iter().map(|&x| x as i32).collect(),
        other => return Err(err(format!("dtype {other:?}, expected an integer tensor"))),
    };
    Ok((view.shape().to_vec(), values))
}

pub fn int_tensor<const D: usize>(
    st: &SafeTensors,
    file: &str,
    name: &str,
    device: &Device,
) -> Result<Tensor<B, D, Int>> {
    let (shape, values) = read_i32(st, file, name)?;
    if shape.len() != D {
        return Err(Error::Weights {
            file: file.into(),
            name: name.into(),
            message: format!("rank {}, expected {D}", shape.len()),
        });
    }
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

/// Reads `batch.inputs`, `batch.labels` and `batch.puzzle_identifiers` under `prefix`.
pub fn read_batch(st: &SafeTensors, file: &str, prefix: &str, device: &Device) -> Result<Batch> {
    Ok(Batch {
        inputs: int_tensor(st, file, &format!("{prefix}batch.inputs"), device)?,
        labels: int_tensor(st, file, &format!("{prefix}batch.labels"), device)?,
        puzzle_identifiers: int_tensor(
            st,
            file,
            &format!("{prefix}batch.puzzle_identifiers"),
            device,
        )?,
    })
}

/// Compares float values with the reference under `tol`.
pub fn compare_f32(
    name: &str,
    shape: Vec<usize>,
    got: &[f32],
    want: &[f32],
    atol: f64,
    rtol: f64,
) -> Comparison {
    let widen = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    compare_f64(name, shape, &widen(got), &widen(want), atol, rtol)
}

/// Compares f64 values under `|a - b| <= atol + rtol * |b|`, element-wise.
pub fn compare_f64(
    name: &str,
    shape: Vec<usize>,
    got: &[f64],
    want: &[f64],
    atol: f64,
    rtol: f64,
) -> Comparison {
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    let mut bad = got.len().abs_diff(want.len());
    for (&a, &b) in got.iter().zip(want) {
        // Equal values (infinities included) differ by 0.
        let d = if a == b { 0.0 } else { (a - b).abs() };
        // A NaN difference is not `<=` anything, so it counts as a mismatch.
        let within = d <= atol + rtol * b.abs();
        if !within {
            bad += 1;
        }
        max_abs = max_abs.max(if d.is_nan() { f64::INFINITY } else { d });
        if b != 0.0 {
            max_rel = max_rel.max(d / b.abs());
        }
    }
    Comparison {
        tensor: name.into(),
        shape,
        max_abs_err: max_abs,
        max_rel_err: max_rel,
        mismatches: bad,
        tolerance: Tolerance::Close { atol, rtol },
        ok: bad == 0,
        detail: None,
    }
}

/// Compares integer values exactly.
pub fn compare_exact(name: &str, shape: Vec<usize>, got: &[i32], want: &[i32]) -> Comparison {
    let mut bad = got.iter().zip(want).filter(|(a, b)| a != b).count();
    if got.len() != want.len() {
        bad += got.len().abs_diff(want.len());
    }
    let max_abs = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .fold(0.0, f64::max);
    Comparison {
        tensor: name.into(),
        shape,
        max_abs_err: max_abs,
        max_rel_err: 0.0,
        mismatches: bad,
        tolerance: Tolerance::Exact,
        ok: bad == 0,
        detail: None,
    }
}

fn float_values<const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let shape = t.dims().to_vec();
    let values = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("converted to f32");
    (shape, values)
}

fn int_values<const D: usize>(t: Tensor<B, D, Int>) -> (Vec<usize>, Vec<i32>) {
    let shape = t.dims().to_vec();
    let values = t
        .into_data()
        .convert::<i32>()
        .to_vec::<i32>()
        .expect("converted to i32");
    (shape, values)
}

/// A 0-dim reference scalar (shape `[]`) compares with recursa's `[1]`.
fn scalar_as_1d(shape: Vec<usize>) -> Vec<usize> {
    if shape.is_empty() {
        vec![1]
    } else {
        shape
    }
}

/// Compares a float tensor with the fixture's tensor `name`.
pub fn check_float<const D: usize>(
    st: &SafeTensors,
    fx: &Fixture,
    name: &str,
    got: Tensor<B, D>,
    atol: f64,
    rtol: f64,
) -> Result<Comparison> {
    let want = read_f32(st, &fx.file, name)?;
    let (shape, got) = float_values(got);
    let mut c = compare_f32(name, shape.clone(), &got, &want.values, atol, rtol);
    if shape != scalar_as_1d(want.shape) {
        c.ok = false;
        c.mismatches = c.mismatches.max(1);
    }
    Ok(c)
}

/// Compares an integer tensor with the fixture's tensor `name`, exactly.
pub fn check_int<const D: usize>(
    st: &SafeTensors,
    fx: &Fixture,
    name: &str,
    got: Tensor<B, D, Int>,
) -> Result<Comparison> {
    let (want_shape, want) = read_i32(st, &fx.file, name)?;
    let want_shape = scalar_as_1d(want_shape);
    let (shape, got) = int_values(got);
    let mut c = compare_exact(name, shape.clone(), &got, &want);
    if shape != want_shape {
        c.ok = false;
        c.mismatches = c.mismatches.max(1);
    }
    Ok(c)
}

/// A network shape and one plugin config on each axis.
type PluginChoice = (
    recursa_core::model::NetConfig,
    Box<dyn recursa_core::ScheduleConfig>,
    Box<dyn recursa_core::TargetConfig>,
    Box<dyn recursa_core::HaltingConfig>,
);

/// The model a reference fixture describes (by its kind), with its weights loaded.
pub fn model_from_reference(fx: &Fixture, device: &Device) -> Result<LoopedModel> {
    let mut cfg = fx.config()?;
    let (t, n, max) = (cfg.H_cycles, cfg.L_cycles, cfg.halt_max_steps);
    let (net_config, schedule, target, halting): PluginChoice = match fx.kind.as_str() {
        // HRM and the baseline always derive the prefix by ceil-div (no puzzle_emb_len key).
        "hrm_forward" => {
            cfg.puzzle_emb_len = 0;
            (
                cfg.net_config(cfg.H_layers, 0)?,
                Box::new(Hrm {
                    h_cycles: t,
                    l_cycles: n,
                }),
                Box::new(FinalAnswer::default()),
                Box::new(ActQ {
                    max_steps: max,
                    exploration: cfg.halt_exploration_prob,
                }),
            )
        }
        "baseline_forward" => {
            cfg.puzzle_emb_len = 0;
            cfg.L_layers = 0;
            (
                cfg.net_config(cfg.H_layers, 0)?,
                Box::new(Direct {}),
                Box::new(FinalAnswer::default()),
                Box::new(ActHalt {
                    max_steps: max,
                    exploration: cfg.halt_exploration_prob,
                    no_act_continue: false,
                }),
            )
        }
        "dis" => (
            cfg.net_config(0, max + 2)?,
            Box::new(Dis::new(t, n)),
            Box::new(DisLinearPath {
                steps: max,
                step_decay: None,
                fixed_paths: None,
            }),
            Box::new(FixedSteps { steps: max }),
        ),
        // TRM ignores H_layers (one network, L_level).
        _ => (
            cfg.net_config(0, 0)?,
            Box::new(Trm::new(t, n)),
            Box::new(FinalAnswer::default()),
            Box::new(ActHalt {
                max_steps: max,
                exploration: cfg.halt_exploration_prob,
                no_act_continue: cfg.no_ACT_continue,
            }),
        ),
    };
    let mut net = ReasoningNet::new(&net_config, 0, device)?;
    load_net(&mut net, &fx.bytes, &fx.file, "")?;
    LoopedModel::new(net, schedule.build()?, target.build()?, halting.build()?)
}

/// Reads an F64 (or F32) tensor as f64 values.
pub fn read_f64(st: &SafeTensors, file: &str, name: &str) -> Result<(Vec<usize>, Vec<f64>)> {
    let view = st.tensor(name).map_err(|_| Error::Weights {
        file: file.into(),
        name: name.into(),
        message: "missing".into(),
    })?;
    let b = view.data();
    let values = match view.dtype() {
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")))
            .collect(),
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        other => {
            return Err(Error::Weights {
                file: file.into(),
                name: name.into(),
                message: format!("dtype {other:?}, expected a float tensor"),
            })
        }
    };
    Ok((view.shape().to_vec(), values))
}

pub fn values_f64<Any: burn::tensor::backend::Backend, const D: usize>(
    t: Tensor<Any, D>,
) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("converted to f64")
}

/// A gradient check: `max|a-b| <= relative * max|ref| + 1e-6` over the tensor
/// (`relative` from [`crate::tolerance::Tolerances::grad_relative`]).
fn compare_grad(
    name: &str,
    shape: Vec<usize>,
    got: &[f32],
    want: &[f32],
    relative: f64,
) -> Comparison {
    let scale = want.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
    let atol = relative * scale + 1e-6;
    compare_f32(name, shape, got, want, atol, 0.0)
}

/// The gradient of every parameter, by reference name, in reference layout.
struct GradCollector<'a> {
    grads: &'a <B as burn::tensor::backend::AutodiffBackend>::Gradients,
    out: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl WeightVisitor<B> for GradCollector<'_> {
    fn visit<const D: usize>(
        &mut self,
        name: &str,
        role: Role,
        layout: Layout,
        p: &mut Param<Tensor<B, D>>,
    ) {
        if role == Role::Buffer {
            return;
        }
        if let Some(mut g) = p.val().grad(self.grads) {
            if layout == Layout::Transposed {
                g = g.transpose();
            }
            let shape = g.dims().to_vec();
            let v = values_f64(g).into_iter().map(|x| x as f32).collect();
            self.out.push((name.to_string(), shape, v));
        }
    }
}

/// The gradient of every trainable tensor and of the puzzle rows against `{p}grad.*`.
/// A gradient the fixture does not store (a tensor the reference does not train) is an error.
pub fn grad_comparisons(
    st: &SafeTensors,
    fx: &Fixture,
    p: &str,
    model: &LoopedModel,
    out: &StepOutput,
    grads: &<B as burn::tensor::backend::AutodiffBackend>::Gradients,
    relative: f64,
) -> Result<Vec<Comparison>> {
    let mut c = Vec::new();
    let mut collector = GradCollector {
        grads,
        out: Vec::new(),
    };
    visit_net(&mut model.net.clone(), &mut collector);
    for (name, shape, got) in collector.out {
        let want = read_f32(st, &fx.file, &format!("{p}grad.{name}"))?;
        c.push(compare_grad(
            &format!("{p}grad.{name}"),
            shape,
            &got,
            &want.values,
            relative,
        ));
    }
    if let Some((rows, ids)) = &out.puzzle {
        let g = rows
            .grad(grads)
            .ok_or_else(|| Error::Other("puzzle rows have no gradient".into()))?;
        let shape = g.dims().to_vec();
        let got: Vec<f32> = values_f64(g).into_iter().map(|x| x as f32).collect();
        let want = read_f32(st, &fx.file, &format!("{p}grad.puzzle_emb.local_weights"))?;
        c.push(compare_grad(
            &format!("{p}grad.puzzle_emb.local_weights"),
            shape,
            &got,
            &want.values,
            relative,
        ));
        if st.tensor(&format!("{p}puzzle_emb.local_ids")).is_ok() {
            c.push(check_int(
                st,
                fx,
                &format!("{p}puzzle_emb.local_ids"),
                ids.clone(),
            )?);
        }
    }
    Ok(c)
}

/// Compares a scalar with the fixture's 0-dim tensor `name` (F64 or F32).
pub fn compare_f64_scalar(
    st: &SafeTensors,
    fx: &Fixture,
    name: &str,
    got: f64,
    atol: f64,
    rtol: f64,
) -> Result<Comparison> {
    let want = scalar_f64(st, fx, name)?;
    Ok(compare_f64(name, vec![], &[got], &[want], atol, rtol))
}

pub fn scalar_f64(st: &SafeTensors, fx: &Fixture, name: &str) -> Result<f64> {
    Ok(read_f64(st, &fx.file, name)?.1[0])
}
