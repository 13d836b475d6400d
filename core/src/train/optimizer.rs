//! The dense optimizer of a run, as the burn optimizer it is (AdamATan2, ours, or
//! burn's AdamW), and its state on disk (a burn record).

use std::path::PathBuf;

use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};

use crate::model::Net;
use crate::train::adam_atan2::{AdamAtan2, AdamAtan2Config};
use crate::train::config::{OptimizerKind, TrainConfig};
use crate::{Device, Error, Result, B};

/// The dense optimizer, as the burn optimizer it is.
pub enum Dense {
    AdamAtan2(OptimizerAdaptor<AdamAtan2, Net, B>),
    AdamW(OptimizerAdaptor<burn::optim::AdamW, Net, B>),
}

impl Dense {
    pub fn new(c: &TrainConfig) -> Self {
        match c.optimizer {
            OptimizerKind::AdamAtan2 => Dense::AdamAtan2(
                AdamAtan2Config {
                    beta1: c.beta1,
                    beta2: c.beta2,
                    weight_decay: c.weight_decay,
                }
                .init::<B, Net>(),
            ),
            // burn's defaults differ from PyTorch's (epsilon 1e-5, decay 1e-4): set them.
            OptimizerKind::Adamw => Dense::AdamW(
                burn::optim::AdamWConfig::new()
                    .with_beta_1(c.beta1 as f32)
                    .with_beta_2(c.beta2 as f32)
                    .with_epsilon(1e-8)
                    .with_weight_decay(c.weight_decay as f32)
                    .init::<B, Net>(),
            ),
        }
    }

    pub fn step(&mut self, lr: f64, net: Net, grads: GradientsParams) -> Net {
        match self {
            Dense::AdamAtan2(o) => o.step(lr, net, grads),
            Dense::AdamW(o) => o.step(lr, net, grads),
        }
    }

    pub fn save(&self, path: PathBuf) -> Result<()> {
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let r = match self {
            Dense::AdamAtan2(o) => recorder.record(o.to_record(), path.clone()),
            Dense::AdamW(o) => recorder.record(o.to_record(), path.clone()),
        };
        r.map_err(|e| Error::Other(format!("{}: {e}", path.display())))
    }

    pub fn load(self, path: PathBuf, device: &Device) -> Result<Self> {
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let err = |e: burn::record::RecorderError| {
            Error::Input(format!("{}: optimizer state: {e}", path.display()))
        };
        Ok(match self {
            Dense::AdamAtan2(o) => {
                Dense::AdamAtan2(o.load_record(recorder.load(path.clone(), device).map_err(err)?))
            }
            Dense::AdamW(o) => {
                Dense::AdamW(o.load_record(recorder.load(path.clone(), device).map_err(err)?))
            }
        })
    }
}
