//! Sparse SignSGD for the puzzle-embedding table (reference
//! `CastedSparseEmbeddingSignSGD_Distributed`).
//!
//! burn's optimizers update whole parameters; the puzzle table (up to ~900k rows)
//! must only change on the rows of the batch, so this is written here:
//!
//! ```text
//! ids = unique(local_ids);  G[id] = sum of the gradient rows with that id
//! W[ids] = W[ids] * (1 - lr*wd) - lr * sign(G)     (other rows untouched, no decay)
//! ```
//! Duplicate ids are summed *before* `sign`.

use burn::module::Param;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::B;

/// Weight decay of the sparse SignSGD (reference `puzzle_emb_weight_decay`, default 0.1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignSgdConfig {
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
}

fn d_wd() -> f64 {
    0.1
}

impl Default for SignSgdConfig {
    fn default() -> Self {
        SignSgdConfig {
            weight_decay: d_wd(),
        }
    }
}

fn rows_again(table: &Tensor<B, 2>, ids: &Tensor<B, 1, Int>) -> Tensor<B, 2> {
    table.clone().select(0, ids.clone())
}

/// Applies one sparse SignSGD step to `table` from the gradient of its rows.
///
/// # Shapes
/// `table: [num_ids, ndim]`, `grad: [batch, ndim]`, `ids: [batch]`
pub fn sign_sgd_step(
    table: &mut Param<Tensor<B, 2>>,
    grad: Tensor<B, 2>,
    ids: Tensor<B, 1, Int>,
    lr: f64,
    config: &SignSgdConfig,
) {
    let device = grad.device();
    let ids_host: Vec<i64> = ids
        .into_data()
        .convert::<i64>()
        .to_vec()
        .expect("converted to i64");
    // torch.unique: sorted unique ids, and for each row the index of its id.
    let mut unique = ids_host.clone();
    unique.sort_unstable();
    unique.dedup();
    let inverse: Vec<i64> = ids_host
        .iter()
        .map(|id| {
            unique
                .binary_search(id)
                .expect("id is in its own unique list") as i64
        })
        .collect();
    let (n_unique, ndim) = (unique.len(), grad.dims()[1]);
    let inverse =
        Tensor::<B, 1, Int>::from_data(TensorData::new(inverse, [ids_host.len()]), &device);
    let unique = Tensor::<B, 1, Int>::from_data(TensorData::new(unique, [n_unique]), &device);

    let summed = Tensor::<B, 2>::zeros([n_unique, ndim], &device).select_assign(
        0,
        inverse,
        grad,
        IndexingUpdateOp::Add,
    );
    let weights = table.val();
    let rows = weights.clone().select(0, unique.clone());
    let updated = rows * (1.0 - lr * config.weight_decay) - summed.sign() * lr;
    // Overwrite the rows exactly: subtracting them gives exact zeros, then adding
    // the new rows gives them bit for bit (not every backend has an assigning select).
    let weights = weights
        .select_assign(
            0,
            unique.clone(),
            rows_again(&table.val(), &unique).neg(),
            IndexingUpdateOp::Add,
        )
        .select_assign(0, unique, updated, IndexingUpdateOp::Add);
    *table = Param::initialized(table.id, weights.set_require_grad(false));
}
