//! Verification of training fixtures: `stablemax` and `trm_train_step`.
//!
//! `trm_train_step` is checked in the fixture README's three independent parts,
//! so a discrepancy is localised: (1) forward, loss, metrics, carry and gradients
//! of train step 1; (2) the optimizers applied to the *stored* step-1 gradients;
//! (3) train step 2 from the stored weights and carry, and its optimizer step.

use crate::tolerance::Tolerances;
use burn::module::Param;
use burn::optim::SimpleOptimizer;
use burn::tensor::{Int, Tensor, TensorData};
use recursa_core::model::names::{visit_net, Layout, Role, WeightVisitor};
use recursa_core::state::{Batch, Carry, Latents, StepOutput};
use recursa_core::step::{LoopedModel, StepContext};
use recursa_core::train::adam_atan2::{AdamAtan2Config, AdamAtan2State};
use recursa_core::train::loss::{self, act_loss, LossType, StepLoss};
use recursa_core::train::sign_sgd::{sign_sgd_step, SignSgdConfig};
use recursa_core::weights::{load_net, read_f32};
use recursa_core::{Device, Error, Result, B};
use safetensors::SafeTensors;

use super::compare::{
    check_float, check_int, compare_f32, compare_f64, grad_comparisons, int_tensor,
    model_from_reference, read_batch, read_f64, read_i32, scalar_f64, values_f64, Comparison,
    Fixture,
};

/// `stablemax`: the reference loss functions on hand-made logits.
pub fn verify_stablemax(fx: &Fixture, device: &Device) -> Result<Vec<Comparison>> {
    let st = fx.tensors()?;
    let mut cases: Vec<String> = st
        .names()
        .iter()
        .filter_map(|n| n.strip_suffix(".logits").map(String::from))
        .collect();
    cases.sort();
    let mut out = Vec::new();
    for case in cases {
        let logits = read_f32(&st, &fx.file, &format!("{case}.logits"))?;
        let (_, labels) = read_i32(&st, &fx.file, &format!("{case}.labels"))?;
        let vocab = *logits.shape.last().unwrap_or(&1);
        let rows = logits.values.len() / vocab.max(1);
        // Every case as [1, rows, vocab]; the functions act on the last axis.
        let x = Tensor::<B, 3>::from_data(
            TensorData::new(logits.values.clone(), [1, rows, vocab]),
            device,
        )
        .require_grad();
        let y = Tensor::<B, 2, Int>::from_data(TensorData::new(labels.clone(), [1, rows]), device);
        let shape = logits.shape[..logits.shape.len() - 1].to_vec();

        let stable = loss::stablemax_cross_entropy(x.clone(), y.clone());
        let grads = stable.clone().sum().backward();
        let grad = x.grad(&grads).expect("logits require grad");
        let (_, want) = read_f64(&st, &fx.file, &format!("{case}.stablemax_loss"))?;
        out.push(compare_f64(
            &format!("{case}.stablemax_loss"),
            shape.clone(),
            &values_f64(stable),
            &want,
            0.0,
            1e-12,
        ));
        let (_, want) = read_f64(&st, &fx.file, &format!("{case}.log_stablemax"))?;
        let log_s = loss::log_stablemax(x.clone().detach());
        out.push(compare_f64(
            &format!("{case}.log_stablemax"),
            logits.shape.clone(),
            &values_f64(log_s),
            &want,
            0.0,
            1e-12,
        ));
        let want = read_f32(&st, &fx.file, &format!("{case}.stablemax_grad"))?;
        let got: Vec<f32> = values_f64(grad).into_iter().map(|v| v as f32).collect();
        out.push(compare_f32(
            &format!("{case}.stablemax_grad"),
            logits.shape.clone(),
            &got,
            &want.values,
            1e-6,
            0.0,
        ));
        let soft = loss::softmax_cross_entropy(x.detach(), y);
        let want = read_f32(&st, &fx.file, &format!("{case}.softmax_loss"))?;
        let got: Vec<f32> = values_f64(soft).into_iter().map(|v| v as f32).collect();
        out.push(compare_f32(
            &format!("{case}.softmax_loss"),
            shape,
            &got,
            &want.values,
            1e-7,
            1e-6,
        ));
    }
    Ok(out)
}

/// Applies AdamATan2 to each parameter from stored gradients and compares with `after`.
struct StoredGradStep<'a> {
    st: &'a SafeTensors<'a>,
    fx: &'a Fixture,
    /// Prefix of the gradients to apply (`grad.` or `step2.grad.`).
    grad_prefix: &'a str,
    /// Prefix of the step-1 gradients that rebuild the moments at t = 2, if any.
    moment_prefix: Option<&'a str>,
    after_prefix: &'a str,
    lr: f64,
    rule: recursa_core::train::adam_atan2::AdamAtan2,
    beta: (f64, f64),
    out: Vec<Comparison>,
    error: Option<Error>,
}

impl StoredGradStep<'_> {
    fn tensor<const D: usize>(
        &self,
        name: &str,
        layout: Layout,
        device: &Device,
    ) -> Result<Tensor<B, D>> {
        let h = read_f32(self.st, &self.fx.file, name)?;
        let t = Tensor::<B, D>::from_data(TensorData::new(h.values, h.shape), device);
        Ok(if layout == Layout::Transposed {
            t.transpose()
        } else {
            t
        })
    }

    fn apply<const D: usize>(
        &mut self,
        name: &str,
        role: Role,
        layout: Layout,
        p: &Param<Tensor<B, D>>,
    ) -> Result<()> {
        let device = p.val().device();
        let after_name = format!("{}{name}", self.after_prefix);
        let updated = match role {
            // Buffers are not optimized by AdamATan2 (the puzzle table is checked separately).
            Role::Buffer => p.val(),
            Role::Param => {
                let grad =
                    self.tensor::<D>(&format!("{}{name}", self.grad_prefix), layout, &device)?;
                let state = match self.moment_prefix {
                    None => None,
                    Some(prefix) => {
                        let g1 = self.tensor::<D>(&format!("{prefix}{name}"), layout, &device)?;
                        Some(AdamAtan2State {
                            time: 1,
                            m: g1.clone() * (1.0 - self.beta.0),
                            v: g1.clone() * g1 * (1.0 - self.beta.1),
                        })
                    }
                };
                self.rule.step(self.lr, p.val(), grad, state).0
            }
        };
        if name == "inner.puzzle_emb.weights" {
            return Ok(());
        }
        let updated = if layout == Layout::Transposed {
            updated.transpose()
        } else {
            updated
        };
        self.out.push(check_float(
            self.st,
            self.fx,
            &after_name,
            updated,
            1e-7,
            0.0,
        )?);
        Ok(())
    }
}

impl WeightVisitor<B> for StoredGradStep<'_> {
    fn visit<const D: usize>(
        &mut self,
        name: &str,
        role: Role,
        layout: Layout,
        p: &mut Param<Tensor<B, D>>,
    ) {
        if self.error.is_none() {
            if let Err(e) = self.apply(name, role, layout, p) {
                self.error = Some(e);
            }
        }
    }
}

/// Forward, loss, metrics, carry and gradients of one train step against `{p}*`.
fn check_train_step(
    st: &SafeTensors,
    fx: &Fixture,
    p: &str,
    model: &LoopedModel,
    (carry, out, step_loss): (&Carry, &StepOutput, StepLoss),
    global_batch: usize,
) -> Result<Vec<Comparison>> {
    let tol = Tolerances::for_net(&model.net.config);
    let (a, q, loss) = (tol.activations(), tol.q_logits(), tol.loss());
    let mut c = vec![
        check_float(
            st,
            fx,
            &format!("{p}out.logits"),
            out.logits.clone(),
            a.atol,
            a.rtol,
        )?,
        check_int(st, fx, &format!("{p}out.preds"), step_loss.preds.clone())?,
        check_float(
            st,
            fx,
            &format!("{p}out.q_halt_logits"),
            out.q_halt_logits.clone(),
            q.atol,
            q.rtol,
        )?,
        check_float(
            st,
            fx,
            &format!("{p}out.q_continue_logits"),
            out.q_continue_logits.clone(),
            q.atol,
            q.rtol,
        )?,
        check_float(
            st,
            fx,
            &format!("{p}carry.z_H"),
            carry.latents.z_h.clone(),
            a.atol,
            a.rtol,
        )?,
        check_float(
            st,
            fx,
            &format!("{p}carry.z_L"),
            carry.latents.z_l.clone(),
            a.atol,
            a.rtol,
        )?,
        check_int(st, fx, &format!("{p}carry.steps"), carry.steps.clone())?,
        check_int(
            st,
            fx,
            &format!("{p}carry.halted"),
            carry.halted.clone().int(),
        )?,
        check_int(
            st,
            fx,
            &format!("{p}carry.all_finish"),
            carry.halted.clone().all().int(),
        )?,
        check_int(
            st,
            fx,
            &format!("{p}carry.current_data.inputs"),
            carry.current_data.inputs.clone(),
        )?,
        check_int(
            st,
            fx,
            &format!("{p}carry.current_data.labels"),
            carry.current_data.labels.clone(),
        )?,
        check_int(
            st,
            fx,
            &format!("{p}carry.current_data.puzzle_identifiers"),
            carry.current_data.puzzle_identifiers.clone(),
        )?,
    ];
    let m = &step_loss.metrics;
    for (name, got) in [
        (
            "loss.total",
            values_f64(step_loss.total.clone().detach())[0],
        ),
        ("loss.lm_loss", m.lm_loss),
        ("loss.q_halt_loss", m.q_halt_loss),
    ] {
        let want = scalar_f64(st, fx, &format!("{p}{name}"))?;
        c.push(compare_f64(
            &format!("{p}{name}"),
            vec![],
            &[got],
            &[want],
            loss.atol,
            loss.rtol,
        ));
    }
    for (name, got) in [
        ("metric.count", m.count),
        ("metric.exact_accuracy", m.exact_accuracy),
        ("metric.q_halt_accuracy", m.q_halt_accuracy),
        ("metric.steps", m.steps),
    ] {
        let (_, want) = read_i32(st, &fx.file, &format!("{p}{name}"))?;
        c.push(super::compare::compare_exact(
            &format!("{p}{name}"),
            vec![],
            &[got as i32],
            &want,
        ));
    }
    let want = scalar_f64(st, fx, &format!("{p}metric.accuracy"))?;
    c.push(compare_f64(
        &format!("{p}metric.accuracy"),
        vec![],
        &[m.accuracy],
        &[want],
        1e-6,
        0.0,
    ));

    // Gradients of (1/global_batch) * loss.
    let grads = (step_loss.total * (1.0 / global_batch as f64)).backward();
    let relative = Tolerances::for_net(&model.net.config).grad_relative(None);
    c.extend(grad_comparisons(st, fx, p, model, out, &grads, relative)?);
    Ok(c)
}

fn run_step(model: &LoopedModel, carry: Carry, batch: &Batch) -> (Carry, StepOutput, StepLoss) {
    let mut ctx = StepContext::train(0);
    let (carry, out) = model.step(carry, batch, &mut ctx);
    let step_loss = act_loss(&out, &carry, LossType::StablemaxCrossEntropy, |sc| {
        model.halting.q_loss(&out, sc)
    });
    (carry, out, step_loss)
}

fn lr_pair(fx: &Fixture, step: &str) -> Result<(f64, f64)> {
    let fixture: serde_json::Value = serde_json::from_str(
        fx.metadata
            .get("fixture")
            .map(String::as_str)
            .unwrap_or("{}"),
    )
    .unwrap_or_default();
    let rates = &fixture["learning_rates"][step];
    match (rates["lr"].as_f64(), rates["puzzle_emb_lr"].as_f64()) {
        (Some(lr), Some(p)) => Ok((lr, p)),
        _ => Err(Error::Other(format!(
            "{}: fixture.learning_rates.{step} is missing",
            fx.file
        ))),
    }
}

/// Optimizer part: AdamATan2 on the stored gradients, SignSGD on the puzzle table.
fn check_optimizers(
    st: &SafeTensors,
    fx: &Fixture,
    device: &Device,
    weights_prefix: &str,
    step: &str,
    (grad_prefix, moment_prefix, after_prefix): (&str, Option<&str>, &str),
) -> Result<Vec<Comparison>> {
    let config = fx.config()?;
    let opt: serde_json::Value = serde_json::from_str(
        fx.metadata
            .get("config")
            .map(String::as_str)
            .unwrap_or("{}"),
    )
    .map_err(|e| Error::Other(e.to_string()))?;
    let o = &opt["optimizer"];
    let f = |k: &str, d: f64| o[k].as_f64().unwrap_or(d);
    let adam = AdamAtan2Config {
        beta1: f("beta1", 0.9),
        beta2: f("beta2", 0.95),
        weight_decay: f("weight_decay", 0.1),
    };
    let sign = SignSgdConfig {
        weight_decay: f("puzzle_emb_weight_decay", 0.1),
    };
    let (lr, puzzle_lr) = lr_pair(fx, step)?;

    let mut net = recursa_core::model::ReasoningNet::new(&config.net_config(0, 0)?, 0, device)?;
    load_net(&mut net, &fx.bytes, &fx.file, weights_prefix)?;
    let mut stepper = StoredGradStep {
        st,
        fx,
        grad_prefix,
        moment_prefix,
        after_prefix,
        lr,
        rule: adam.rule(),
        beta: (adam.beta1, adam.beta2),
        out: Vec::new(),
        error: None,
    };
    visit_net(&mut net, &mut stepper);
    if let Some(e) = stepper.error {
        return Err(e);
    }
    let mut out = stepper.out;
    if let Some(table) = &mut net.puzzle_emb {
        let p = grad_prefix.trim_end_matches("grad.");
        let g = read_f32(
            st,
            &fx.file,
            &format!("{grad_prefix}puzzle_emb.local_weights"),
        )?;
        let grad = Tensor::<B, 2>::from_data(TensorData::new(g.values, g.shape), device);
        let ids: Tensor<B, 1, Int> =
            int_tensor(st, &fx.file, &format!("{p}puzzle_emb.local_ids"), device)?;
        sign_sgd_step(&mut table.weights, grad, ids, puzzle_lr, &sign);
        let name = format!("{after_prefix}inner.puzzle_emb.weights");
        out.push(check_float(st, fx, &name, table.weights.val(), 1e-7, 0.0)?);
    }
    Ok(out)
}

/// `trm_train_step`: see the module doc.
pub fn verify_trm_train_step(fx: &Fixture, device: &Device) -> Result<Vec<Comparison>> {
    let st = fx.tensors()?;
    let fixture: serde_json::Value = serde_json::from_str(
        fx.metadata
            .get("fixture")
            .map(String::as_str)
            .unwrap_or("{}"),
    )
    .unwrap_or_default();
    let global_batch = fixture["global_batch_size"]
        .as_u64()
        .unwrap_or(fx.config()?.batch_size as u64) as usize;
    let mut out = Vec::new();

    // 1. Train step 1 from the initial carry.
    let model = model_from_reference(fx, device)?;
    let batch = read_batch(&st, &fx.file, "", device)?;
    let (carry, step_out, step_loss) = run_step(&model, model.initial_carry(&batch), &batch);
    out.extend(check_train_step(
        &st,
        fx,
        "",
        &model,
        (&carry, &step_out, step_loss),
        global_batch,
    )?);

    // 2. Optimizers on the stored step-1 gradients (t = 1).
    out.extend(check_optimizers(
        &st,
        fx,
        device,
        "",
        "step1",
        ("grad.", None, "after."),
    )?);

    // 3. Train step 2 from the stored weights and carry, with a new batch.
    let mut model = model;
    load_net(&mut model.net, &fx.bytes, &fx.file, "after.")?;
    let carry = stored_carry(&st, fx, device, model.net.config.seq_len)?;
    let batch2 = read_batch(&st, &fx.file, "step2.", device)?;
    let (carry2, out2, loss2) = run_step(&model, carry, &batch2);
    out.extend(check_train_step(
        &st,
        fx,
        "step2.",
        &model,
        (&carry2, &out2, loss2),
        global_batch,
    )?);
    out.extend(check_optimizers(
        &st,
        fx,
        device,
        "after.",
        "step2",
        ("step2.grad.", Some("grad."), "step2.after."),
    )?);
    Ok(out)
}

/// The step-1 carry as stored in the fixture (`carry.*`).
fn stored_carry(st: &SafeTensors, fx: &Fixture, device: &Device, seq_len: usize) -> Result<Carry> {
    let z = |name: &str| -> Result<Tensor<B, 3>> {
        let h = read_f32(st, &fx.file, name)?;
        Ok(Tensor::from_data(
            TensorData::new(h.values, h.shape),
            device,
        ))
    };
    let halted: Tensor<B, 1, Int> = int_tensor(st, &fx.file, "carry.halted", device)?;
    let inputs: Tensor<B, 2, Int> = int_tensor(st, &fx.file, "carry.current_data.inputs", device)?;
    let rows = inputs.dims()[0];
    Ok(Carry {
        latents: Latents {
            z_h: z("carry.z_H")?,
            z_l: z("carry.z_L")?,
        },
        steps: int_tensor(st, &fx.file, "carry.steps", device)?,
        halted: halted.equal_elem(1),
        current_data: Batch {
            inputs,
            labels: int_tensor(st, &fx.file, "carry.current_data.labels", device)?,
            puzzle_identifiers: int_tensor(
                st,
                &fx.file,
                "carry.current_data.puzzle_identifiers",
                device,
            )?,
        },
        preds: Tensor::zeros([rows, seq_len], device),
        episode: None,
    })
}
