//! Backend selection by name.
//!
//! | name   | backend                          | cargo feature | devices            |
//! |--------|----------------------------------|---------------|--------------------|
//! | `cpu`  | burn-flex (pure Rust, gemm crate with AVX-512, rayon) | always | `cpu` |
//! | `ndarray` | burn-ndarray (pure Rust, matrixmultiply, rayon) | always | `ndarray` |
//! | `cuda` | burn-cuda (NVRTC at run time)    | `cuda`        | `cuda`, `cuda:N`   |
//! | `wgpu` | burn-wgpu, WGSL                  | `wgpu`        | `wgpu` (best GPU), `wgpu:cpu` |
//! | `tch`  | burn-tch (libtorch)              | `tch`         | `tch`, `tch:cuda:N` |
//!
//! Every backend goes through `burn::Dispatch`, so the rest of recursa is not generic.
//! The CPU default is burn-flex: with the gemm crate's AVX-512 kernels it runs TRM's
//! GEMMs at 207-252 GFLOP/s against matrixmultiply's 147-187 (2 threads, f32), and
//! its views avoid copies (`docs/performance.md` has the measurements).

use recursa_core::{Device, Error, Result};

/// A backend this binary may know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    /// The name used on the command line and in experiment files.
    pub name: &'static str,
    /// The cargo feature that compiles it in.
    pub feature: &'static str,
    /// Whether this binary has it.
    pub compiled: bool,
    /// What it is.
    pub doc: &'static str,
}

/// Every backend recursa knows, compiled in or not.
pub fn backends() -> Vec<BackendInfo> {
    vec![
        BackendInfo {
            name: "cpu",
            feature: "(always)",
            compiled: true,
            doc: "burn-flex on the CPU, pure Rust (embedded default)",
        },
        BackendInfo {
            name: "ndarray",
            feature: "(always)",
            compiled: true,
            doc: "burn-ndarray on the CPU, pure Rust (the earlier default)",
        },
        BackendInfo {
            name: "cuda",
            feature: "cuda",
            compiled: cfg!(feature = "cuda"),
            doc: "NVIDIA GPUs through burn-cuda; kernels compiled with NVRTC at run time",
        },
        BackendInfo {
            name: "wgpu",
            feature: "wgpu",
            compiled: cfg!(feature = "wgpu"),
            doc: "any GPU (Vulkan, Metal, DX12) through burn-wgpu, WGSL shaders",
        },
        BackendInfo {
            name: "tch",
            feature: "tch",
            compiled: cfg!(feature = "tch"),
            doc: "libtorch through burn-tch (needs LIBTORCH or a pip torch at build time)",
        },
    ]
}

fn not_compiled(name: &str) -> Error {
    Error::Backend(format!(
        "backend `{name}` is not compiled into this binary; rebuild with `--features {name}` \
         (e.g. `cargo build --release --features {name}`)"
    ))
}

fn index(spec: &str, rest: Option<&str>) -> Result<usize> {
    match rest {
        None => Ok(0),
        Some(i) => i
            .parse()
            .map_err(|_| Error::Backend(format!("device `{spec}`: `{i}` is not a device index"))),
    }
}

/// The device named by `spec`: `cpu`, `cuda`, `cuda:1`, `wgpu`, `wgpu:cpu`, `tch`, `tch:cuda:0`.
pub fn device(spec: &str) -> Result<Device> {
    let mut parts = spec.splitn(2, ':');
    let name = parts.next().unwrap_or_default();
    let rest = parts.next();
    match name {
        "cpu" | "ndarray" => {
            if rest.is_some() {
                return Err(Error::Backend(format!(
                    "device `{spec}`: the {name} backend has one device, `{name}`"
                )));
            }
            if name == "cpu" {
                Ok(Device::Flex(Default::default()))
            } else {
                Ok(Device::NdArray(Default::default()))
            }
        }
        "cuda" => {
            let _i = index(spec, rest)?;
            #[cfg(feature = "cuda")]
            return Ok(Device::Cuda(burn::backend::cuda::CudaDevice::new(_i)));
            #[cfg(not(feature = "cuda"))]
            Err(not_compiled("cuda"))
        }
        "wgpu" => {
            #[cfg(feature = "wgpu")]
            {
                use burn::backend::wgpu::WgpuDevice;
                let device = match rest {
                    None => WgpuDevice::DefaultDevice,
                    Some("cpu") => WgpuDevice::Cpu,
                    Some(i) => WgpuDevice::DiscreteGpu(index(spec, Some(i))?),
                };
                return Ok(Device::Wgpu(device));
            }
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = rest;
                Err(not_compiled("wgpu"))
            }
        }
        "tch" => {
            #[cfg(feature = "tch")]
            {
                use burn::backend::libtorch::LibTorchDevice;
                let device = match rest {
                    None | Some("cpu") => LibTorchDevice::Cpu,
                    Some(r) => match r.strip_prefix("cuda") {
                        Some(i) => LibTorchDevice::Cuda(index(spec, i.strip_prefix(':'))?),
                        None => {
                            return Err(Error::Backend(format!(
                                "device `{spec}`: use tch, tch:cpu or tch:cuda:N"
                            )))
                        }
                    },
                };
                return Ok(Device::LibTorch(device));
            }
            #[cfg(not(feature = "tch"))]
            Err(not_compiled("tch"))
        }
        other => Err(Error::Backend(format!(
            "unknown backend `{other}`; known: cpu, ndarray, cuda, wgpu, tch"
        ))),
    }
}

/// Makes `f32` (default), `bf16` or `f16` the float type of every tensor created
/// on `device` from now on: parameters, activations and optimizer state alike (not
/// the reference's mixed precision, where parameters stay f32). Call it before the
/// first tensor on that device; backends without the type refuse it here.
pub fn set_float_dtype(device: &Device, dtype: &str) -> Result<()> {
    use burn::tensor::FloatDType;
    let float = match dtype {
        "f32" => return Ok(()),
        "bf16" => FloatDType::BF16,
        "f16" => FloatDType::F16,
        other => {
            return Err(Error::config(
                "--dtype",
                format!("`{other}` is not one of f32, bf16, f16"),
            ))
        }
    };
    // Through the inner `Dispatch` backend, which knows what each device supports
    // (the autodiff decorator would accept any float type).
    burn::tensor::backend::set_default_float_dtype::<burn::Dispatch>(device, float)
        .map_err(|e| Error::Backend(format!("{device:?} cannot use {dtype}: {e:?}")))
}

/// Tries a tiny computation on `spec`'s device and says what happened: the device
/// name on success, the error otherwise. Never panics (a missing driver is reported).
pub fn probe(spec: &str) -> std::result::Result<String, String> {
    use burn::tensor::Tensor;
    let device = device(spec).map_err(|e| e.to_string())?;
    let run = std::panic::catch_unwind(|| {
        let t = Tensor::<recursa_core::B, 1>::from_floats([1.0, 2.0, 3.0], &device);
        let sum: f32 = t.sum().into_scalar();
        sum
    });
    match run {
        Ok(6.0) => Ok(format!("{device:?}")),
        Ok(sum) => Err(format!("{device:?}: 1+2+3 gave {sum}")),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the backend panicked".into());
            Err(msg.lines().next().unwrap_or_default().to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_there() {
        assert!(device("cpu").is_ok());
        assert!(probe("cpu").is_ok());
    }

    #[test]
    fn float_types_are_named_or_refused() {
        assert!(set_float_dtype(&device("cpu").unwrap(), "f32").is_ok());
        let e = set_float_dtype(&device("cpu").unwrap(), "f8").unwrap_err();
        assert!(e.to_string().contains("f32, bf16, f16"), "{e}");
    }

    #[test]
    fn unknown_and_missing_backends_are_clear_errors() {
        let e = device("tpu").unwrap_err().to_string();
        assert!(e.contains("unknown backend `tpu`"), "{e}");
        assert!(device("cpu:3").is_err());
        #[cfg(not(feature = "cuda"))]
        {
            let e = device("cuda").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
