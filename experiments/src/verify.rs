//! `recursa verify-reference FILE`: rebuild what a reference fixture ran and compare.
//!
//! The fixture's `kind` (from its metadata, never its file name) selects what is run.
//! Every compared tensor gives one [`Comparison`]; the file passes when every float
//! tensor is within the fixture README's tolerance and every discrete one is exact.

use std::collections::HashMap;
use std::path::Path;

use crate::tolerance::Tolerances;
use burn::tensor::{Int, Tensor, TensorData};
use recursa_core::model::ReasoningNet;
use recursa_core::reference::ReferenceConfig;
use recursa_core::step::{Batch, LoopedModel, StepContext};
use recursa_core::weights::{load_net, read_f32};
use recursa_core::{Device, Error, Result, B};
use recursa_plugins::{
    ActHalt, ActQ, Direct, Dis, DisLinearPath, FinalAnswer, FixedSteps, Hrm, Trm,
};
use safetensors::{Dtype, SafeTensors};
use serde::Serialize;

/// The fixture kinds this release can run.
pub const SUPPORTED_KINDS: &[&str] = &[
    "trm_forward",
    "trm_train_step",
    "hrm_forward",
    "baseline_forward",
    "dis",
    "stablemax",
    "arc_dataset",
    "arc_eval",
];

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

/// Everything checked in one fixture file.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub file: String,
    pub kind: String,
    pub comparisons: Vec<Comparison>,
}

impl Report {
    /// True when every comparison passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.comparisons.is_empty() && self.comparisons.iter().all(|c| c.ok)
    }
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

/// The data crate's checks (ARC builder and evaluator fixtures) as comparisons:
/// each is exact (sets keyed by puzzle name, pass@K in f64, the submission).
fn data_checks(
    checks: std::result::Result<Vec<recursa_data::Check>, recursa_data::DataError>,
) -> Result<Vec<Comparison>> {
    let checks = checks.map_err(Error::from_data)?;
    Ok(checks
        .into_iter()
        .map(|c| Comparison {
            tensor: c.name,
            shape: vec![],
            max_abs_err: 0.0,
            max_rel_err: 0.0,
            mismatches: usize::from(!c.ok),
            tolerance: Tolerance::Exact,
            ok: c.ok,
            detail: Some(c.detail),
        })
        .collect())
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

/// Runs the fixture at `path` on `device` and compares every stored output.
pub fn verify_file(path: &Path, device: &Device) -> Result<Report> {
    let fx = Fixture::open(path)?;
    let comparisons = match fx.kind.as_str() {
        "trm_forward" | "hrm_forward" | "baseline_forward" => verify_forward(&fx, device)?,
        "dis" => crate::verify_dis::verify_dis(&fx, device)?,
        "trm_train_step" => crate::verify_train::verify_trm_train_step(&fx, device)?,
        "stablemax" => crate::verify_train::verify_stablemax(&fx, device)?,
        "arc_dataset" => data_checks(recursa_data::verify_arc_dataset(path))?,
        "arc_eval" => data_checks(recursa_data::verify_arc_eval(path))?,
        other => {
            return Err(Error::Input(format!(
                "{}: fixture kind `{other}` is not supported by this release (supported: {})",
                fx.file,
                SUPPORTED_KINDS.join(", ")
            )))
        }
    };
    Ok(Report {
        file: fx.file.clone(),
        kind: fx.kind.clone(),
        comparisons,
    })
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
                Box::new(FinalAnswer {}),
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
                Box::new(FinalAnswer {}),
                Box::new(ActHalt {
                    max_steps: max,
                    exploration: cfg.halt_exploration_prob,
                    no_act_continue: false,
                }),
            )
        }
        "dis" => (
            cfg.net_config(0, max + 2)?,
            Box::new(Dis {
                h_cycles: t,
                l_cycles: n,
            }),
            Box::new(DisLinearPath {
                steps: max,
                fixed_paths: None,
            }),
            Box::new(FixedSteps { steps: max }),
        ),
        // TRM ignores H_layers (one network, L_level).
        _ => (
            cfg.net_config(0, 0)?,
            Box::new(Trm {
                h_cycles: t,
                l_cycles: n,
            }),
            Box::new(FinalAnswer {}),
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

/// `trm_forward`, `hrm_forward`, `baseline_forward`: K evaluation ACT steps from
/// the initial carry with one batch.
fn verify_forward(fx: &Fixture, device: &Device) -> Result<Vec<Comparison>> {
    let st = fx.tensors()?;
    let model = model_from_reference(fx, device)?;
    let tol = Tolerances::for_net(&model.net.config);
    let (act, q) = (tol.activations(), tol.q_logits());
    let (act_atol, act_rtol, q_atol) = (act.atol, act.rtol, q.atol);
    let batch = read_batch(&st, &fx.file, "", device)?;
    let steps = (1..)
        .take_while(|k| st.tensor(&format!("step{k}.logits")).is_ok())
        .count();
    if steps == 0 {
        return Err(Error::Input(format!(
            "{}: no `step1.logits` to compare",
            fx.file
        )));
    }
    let mut carry = model.initial_carry(&batch);
    let mut ctx = StepContext::eval();
    let mut out = Vec::new();
    for k in 1..=steps {
        let (next, step) = model.step(carry, &batch, &mut ctx);
        carry = next;
        let p = format!("step{k}.");
        out.push(check_float(
            &st,
            fx,
            &format!("{p}logits"),
            step.logits,
            act_atol,
            act_rtol,
        )?);
        out.push(check_float(
            &st,
            fx,
            &format!("{p}q_halt_logits"),
            step.q_halt_logits,
            q_atol,
            0.0,
        )?);
        out.push(check_float(
            &st,
            fx,
            &format!("{p}q_continue_logits"),
            step.q_continue_logits,
            q_atol,
            0.0,
        )?);
        out.push(check_float(
            &st,
            fx,
            &format!("{p}z_H"),
            carry.latents.z_h.clone(),
            act_atol,
            act_rtol,
        )?);
        if st.tensor(&format!("{p}z_L")).is_ok() {
            out.push(check_float(
                &st,
                fx,
                &format!("{p}z_L"),
                carry.latents.z_l.clone(),
                act_atol,
                act_rtol,
            )?);
        }
        out.push(check_int(
            &st,
            fx,
            &format!("{p}halted"),
            carry.halted.clone().int(),
        )?);
        out.push(check_int(
            &st,
            fx,
            &format!("{p}steps"),
            carry.steps.clone(),
        )?);
    }
    Ok(out)
}
