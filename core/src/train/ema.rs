//! The exponential moving average of the weights (the reference `EMAHelper`).

use std::collections::HashMap;

use burn::module::Param;
use burn::tensor::Tensor;

use crate::model::names::{visit_net, Layout, Role, WeightVisitor};
use crate::model::Net;
use crate::B;

/// `ema = rate * ema + (1 - rate) * current` for every dense parameter (buffers and
/// the puzzle table are not averaged, as the reference `EMAHelper`).
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
            if role == Role::Param {
                self.0.insert(name.to_string(), p.val().flatten(0, D - 1));
            }
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
            if let (Role::Param, Some(cur)) = (role, self.0.remove(name)) {
                let shape = p.val().shape();
                let blended = p.val() * self.1 + cur.reshape(shape) * (1.0 - self.1);
                *p = Param::initialized(p.id, blended);
            }
        }
    }
    let mut collect = Collect(HashMap::new());
    visit_net(&mut current.clone(), &mut collect);
    visit_net(ema, &mut Blend(collect.0, rate));
}
