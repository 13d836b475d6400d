//! Gradient clipping by the global norm (PyTorch `clip_grad_norm_`).

use burn::module::Param;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use crate::model::names::{visit_net, Layout, Role, WeightVisitor};
use crate::model::Net;
use crate::{Inner, B};

/// Scales every dense gradient by `min(1, max_norm / ||g||)`, the norm taken over
/// all of them together (PyTorch `clip_grad_norm_`). The squared norms are summed on
/// the device and read back once, not once per parameter (a stall each on a GPU).
pub fn clip_global_norm(net: &mut Net, grads: &mut GradientsParams, max_norm: f64) {
    struct Norm<'a>(&'a GradientsParams, Vec<Tensor<Inner, 1>>);
    impl WeightVisitor<B> for Norm<'_> {
        fn visit<const D: usize>(
            &mut self,
            _: &str,
            _: Role,
            _: Layout,
            p: &mut Param<Tensor<B, D>>,
        ) {
            if let Some(g) = self.0.get::<Inner, D>(p.id) {
                self.1.push(g.square().sum());
            }
        }
    }
    struct Scale<'a>(&'a mut GradientsParams, f64);
    impl WeightVisitor<B> for Scale<'_> {
        fn visit<const D: usize>(
            &mut self,
            _: &str,
            _: Role,
            _: Layout,
            p: &mut Param<Tensor<B, D>>,
        ) {
            if let Some(g) = self.0.remove::<Inner, D>(p.id) {
                self.0.register(p.id, g * self.1);
            }
        }
    }
    let mut norm = Norm(grads, Vec::new());
    visit_net(net, &mut norm);
    if norm.1.is_empty() {
        return;
    }
    let total = (Tensor::cat(norm.1, 0).sum().into_scalar() as f64).sqrt();
    if total > max_norm {
        visit_net(net, &mut Scale(grads, max_norm / (total + 1e-6)));
    }
}
