//! Verification of `dis` fixtures: the DIS rollout of 6 supervision steps with
//! fixed weights, in training mode (with gradients at steps 1 and 6) and in
//! evaluation mode, given the reference's stored linear paths.

use burn::tensor::{Int, Tensor};
use recursa_core::step::{LoopedModel, StepContext};
use recursa_core::train::loss::{act_loss, LossType};
use recursa_core::{Device, Error, Result, B};
use recursa_plugins::DisLinearPath;
use safetensors::SafeTensors;

use super::compare::{
    check_float, check_int, compare_exact, compare_f64_scalar, grad_comparisons, int_tensor,
    model_from_reference, read_batch, read_i32, Comparison, Fixture,
};
use crate::tolerance::Tolerances;

/// The DIS model of the fixture with the stored paths `{prefix}dis.paths` injected.
fn dis_model(fx: &Fixture, st: &SafeTensors, prefix: &str, device: &Device) -> Result<LoopedModel> {
    let mut model = model_from_reference(fx, device)?;
    let paths: Tensor<B, 3, Int> = int_tensor(st, &fx.file, &format!("{prefix}dis.paths"), device)?;
    let steps = paths.dims()[1] - 1;
    model.target = Box::new(DisLinearPath {
        steps,
        step_decay: None,
        fixed_paths: Some(paths),
    });
    Ok(model)
}

/// One rollout (`prefix` "" for training, "eval." for evaluation).
fn rollout(
    fx: &Fixture,
    st: &SafeTensors,
    prefix: &str,
    device: &Device,
    training: bool,
) -> Result<Vec<Comparison>> {
    let model = dis_model(fx, st, prefix, device)?;
    let batch = read_batch(st, &fx.file, prefix, device)?;
    let global_batch = batch.inputs.dims()[0];
    let steps = model.halting.max_steps();
    let mut carry = model.initial_carry(&batch);
    let mut ctx = if training {
        StepContext::train(0)
    } else {
        StepContext::eval()
    };
    let tol = Tolerances::for_net(&model.net.config);
    let mut out = Vec::new();
    for k in 1..=steps {
        let close = tol.dis_activations(k);
        let previous_preds = carry.preds.clone();
        let (next, step) = model.step(carry, &batch, &mut ctx);
        carry = next;
        // What the schedule fed this step: the question and the step-embedding rows, from
        // the rows' data and step counts before it.
        let steps_before = carry.steps.clone() - 1;
        let question = model
            .schedule
            .question(&carry.current_data, &steps_before, &previous_preds);
        let step_index = model.schedule.step_index(&model.net.config, &steps_before);
        let p = format!("{prefix}step{k}.");
        let loss = act_loss(&step, &carry, LossType::StablemaxCrossEntropy, |sc| {
            model.halting.q_loss(&step, sc)
        });
        out.push(check_int(st, fx, &format!("{p}inputs"), question)?);
        out.push(check_int(
            st,
            fx,
            &format!("{p}target"),
            step.target.clone(),
        )?);
        let timestep =
            step_index.ok_or_else(|| Error::Other("the dis schedule gave no step index".into()))?;
        out.push(check_int(st, fx, &format!("{p}timestep"), timestep)?);
        out.push(check_float(
            st,
            fx,
            &format!("{p}logits"),
            step.logits.clone(),
            close.atol,
            close.rtol,
        )?);
        out.push(check_int(st, fx, &format!("{p}preds"), loss.preds.clone())?);
        out.push(check_int(
            st,
            fx,
            &format!("{p}steps"),
            carry.steps.clone(),
        )?);
        out.push(check_int(
            st,
            fx,
            &format!("{p}halted"),
            carry.halted.clone().int(),
        )?);
        out.push(compare_f64_scalar(
            st,
            fx,
            &format!("{p}lm_loss"),
            loss.metrics.lm_loss,
            tol.loss().atol,
            tol.loss().rtol,
        )?);
        let m = &loss.metrics;
        for (name, got) in [
            ("count", m.count),
            ("exact_accuracy", m.exact_accuracy),
            ("steps", m.steps),
        ] {
            let (_, want) = read_i32(st, &fx.file, &format!("{p}metric.{name}"))?;
            out.push(compare_exact(
                &format!("{p}metric.{name}"),
                vec![],
                &[got as i32],
                &want,
            ));
        }
        out.push(compare_f64_scalar(
            st,
            fx,
            &format!("{p}metric.accuracy"),
            m.accuracy,
            1e-6,
            0.0,
        )?);
        if training {
            out.push(check_float(
                st,
                fx,
                &format!("{p}z_H"),
                carry.latents.z_h.clone(),
                close.atol,
                close.rtol,
            )?);
            out.push(check_float(
                st,
                fx,
                &format!("{p}z_L"),
                carry.latents.z_l.clone(),
                close.atol,
                close.rtol,
            )?);
            if st
                .tensor(&format!("{p}grad.puzzle_emb.local_weights"))
                .is_ok()
            {
                let grads = (loss.total * (1.0 / global_batch as f64)).backward();
                let relative = tol.grad_relative(Some(k));
                out.extend(grad_comparisons(
                    st, fx, &p, &model, &step, &grads, relative,
                )?);
            }
        }
    }
    Ok(out)
}

/// `dis`: the training rollout (gradients at the steps that store them) and the evaluation rollout.
pub fn verify_dis(fx: &Fixture, device: &Device) -> Result<Vec<Comparison>> {
    let st = fx.tensors()?;
    let mut out = rollout(fx, &st, "", device, true)?;
    out.extend(rollout(fx, &st, "eval.", device, false)?);
    // q_head gets no gradient in DIS (no Q loss): `grad_comparisons` fails on a
    // gradient that the fixture does not store.
    Ok(out)
}
