//! The exponential moving average of the weights (the reference `EMAHelper`).

use std::collections::HashMap;

use burn::module::Param;
use burn::tensor::Tensor;

use crate::model::names::{visit_net, Layout, Role, WeightVisitor};
use crate::model::Net;
use crate::B;

/// `ema = rate * ema + (1 - rate) * current` for every dense parameter. Buffers (the
/// puzzle table, `H_init`, `L_init`) are not averaged but copied from `current`, as
/// the reference's `EMAHelper.ema_copy` deep-copies the current model and overwrites
/// only its parameters: the averaged weights are scored with the trained task rows.
pub fn ema_update(ema: &mut Net, current: &Net, rate: f64) {
    struct Collect(HashMap<String, Tensor<B, 1>>);
    impl WeightVisitor<B> for Collect {
        fn visit<const D: usize>(
            &mut self,
            name: &str,
            role: Role,
            _: Layout,
            p: &mut Param<Tensor<B, D>>,
        ) {
            let _ = role;
            self.0.insert(name.to_string(), p.val().flatten(0, D - 1));
        }
    }
    struct Blend(HashMap<String, Tensor<B, 1>>, f64);
    impl WeightVisitor<B> for Blend {
        fn visit<const D: usize>(
            &mut self,
            name: &str,
            role: Role,
            _: Layout,
            p: &mut Param<Tensor<B, D>>,
        ) {
            let Some(cur) = self.0.remove(name) else {
                return;
            };
            let cur = cur.reshape(p.val().shape());
            let value = match role {
                Role::Param => p.val() * self.1 + cur * (1.0 - self.1),
                Role::Buffer => cur,
            };
            *p = Param::initialized(p.id, value);
        }
    }
    let mut collect = Collect(HashMap::new());
    visit_net(&mut current.clone(), &mut collect);
    visit_net(ema, &mut Blend(collect.0, rate));
}
