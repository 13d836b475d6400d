//! The reference `state_dict` name of every tensor of the network, and the stable
//! parameter ids derived from them (optimizer state keyed by id survives a restart).
//!
//! [`visit_net`] walks the network once; the safetensors loader and saver
//! ([`crate::weights`]), gradient clipping and the optimizer split are visitors.

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::{backend::Backend, Tensor};

use super::layers::{Block, Level, Mixer, SwiGlu};
use super::ReasoningNet;

/// Whether the optimizer trains a tensor (parameter) or not (buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Param,
    Buffer,
}

/// Whether the stored tensor is the transpose of burn's (PyTorch linear weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Same,
    Transposed,
}

/// Something that reads or replaces each named tensor of a network.
pub trait WeightVisitor<B: Backend> {
    fn visit<const D: usize>(
        &mut self,
        name: &str,
        role: Role,
        layout: Layout,
        p: &mut Param<Tensor<B, D>>,
    );
}

fn visit_linear<B: Backend, V: WeightVisitor<B>>(v: &mut V, name: &str, l: &mut Linear<B>) {
    v.visit(
        &format!("{name}.weight"),
        Role::Param,
        Layout::Transposed,
        &mut l.weight,
    );
    if let Some(bias) = &mut l.bias {
        v.visit(&format!("{name}.bias"), Role::Param, Layout::Same, bias);
    }
}

fn visit_embedding<B: Backend, V: WeightVisitor<B>>(v: &mut V, name: &str, e: &mut Embedding<B>) {
    v.visit(
        &format!("{name}.embedding_weight"),
        Role::Param,
        Layout::Same,
        &mut e.weight,
    );
}

fn visit_swiglu<B: Backend, V: WeightVisitor<B>>(v: &mut V, name: &str, m: &mut SwiGlu<B>) {
    visit_linear(v, &format!("{name}.gate_up_proj"), &mut m.gate_up_proj);
    visit_linear(v, &format!("{name}.down_proj"), &mut m.down_proj);
    if let Some(conv) = &mut m.conv {
        let (weight, bias) = (format!("{name}.conv.weight"), format!("{name}.conv.bias"));
        v.visit(&weight, Role::Param, Layout::Same, &mut conv.weight);
        v.visit(&bias, Role::Param, Layout::Same, &mut conv.bias);
    }
}

fn visit_level<B: Backend, V: WeightVisitor<B>>(v: &mut V, name: &str, level: &mut Level<B>) {
    for (i, Block { mixer, mlp, .. }) in level.layers.iter_mut().enumerate() {
        let prefix = format!("{name}.layers.{i}");
        match mixer {
            Mixer::SelfAttn(attn) => {
                visit_linear(
                    v,
                    &format!("{prefix}.self_attn.qkv_proj"),
                    &mut attn.qkv_proj,
                );
                visit_linear(v, &format!("{prefix}.self_attn.o_proj"), &mut attn.o_proj);
            }
            Mixer::MlpT(m) => visit_swiglu(v, &format!("{prefix}.mlp_t"), m),
        }
        visit_swiglu(v, &format!("{prefix}.mlp"), mlp);
    }
}

/// Visits every tensor of `net` under its reference name (`inner.` prefix included).
pub fn visit_net<B: Backend, V: WeightVisitor<B>>(net: &mut ReasoningNet<B>, v: &mut V) {
    visit_embedding(v, "inner.embed_tokens", &mut net.embed_tokens);
    if let Some(e) = &mut net.embed_pos {
        visit_embedding(v, "inner.embed_pos", e);
    }
    if let Some(e) = &mut net.timestep_embed {
        visit_embedding(v, "inner.timestep_embed", e);
    }
    if let Some(p) = &mut net.puzzle_emb {
        v.visit(
            "inner.puzzle_emb.weights",
            Role::Buffer,
            Layout::Same,
            &mut p.weights,
        );
    }
    if let Some(h) = &mut net.h_level {
        visit_level(v, "inner.H_level", h);
    }
    visit_level(v, "inner.L_level", &mut net.l_level);
    visit_linear(v, "inner.lm_head", &mut net.lm_head);
    visit_linear(v, "inner.q_head", &mut net.q_head);
    v.visit("inner.H_init", Role::Buffer, Layout::Same, &mut net.h_init);
    // A network without an L level (the direct baseline) has no `L_init` in the reference.
    if net.config.l_layers > 0 {
        v.visit("inner.L_init", Role::Buffer, Layout::Same, &mut net.l_init);
    }
}

/// Gives every tensor a parameter id derived from its reference name, so that
/// optimizer state (keyed by id in burn records) survives a restart in a new process.
pub fn stable_param_ids<B: Backend>(net: &mut ReasoningNet<B>) {
    struct Renamer;
    impl<B: Backend> WeightVisitor<B> for Renamer {
        fn visit<const D: usize>(
            &mut self,
            name: &str,
            _role: Role,
            _layout: Layout,
            p: &mut Param<Tensor<B, D>>,
        ) {
            // FNV-1a: stable across platforms and Rust versions.
            let id = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100000001b3)
            });
            let require_grad = p.is_require_grad();
            *p = Param::initialized(id.into(), p.val().set_require_grad(require_grad));
        }
    }
    visit_net(net, &mut Renamer);
}
