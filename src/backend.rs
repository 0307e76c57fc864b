//! Native device selection: the one place the CLI and native tests decide which backend runs.
//! (The page decides in `web::backend`.)

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use burn::tensor::Device;
    use std::fmt;

    /// The native backends this build carries.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum BackendKind {
        /// burn's flex backend: pure-Rust CPU kernels. The default for inference and training
        /// (see README "Benchmarks" for the flex-vs-ndarray figures behind this choice).
        Cpu,
        /// burn-wgpu on whatever GPU API the machine offers (Vulkan here; lavapipe without a GPU),
        /// running the same WGSL kernels as the page.
        Wgpu,
    }

    impl fmt::Display for BackendKind {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                BackendKind::Cpu => "cpu",
                BackendKind::Wgpu => "wgpu",
            })
        }
    }

    impl std::str::FromStr for BackendKind {
        type Err = crate::choice::UnknownChoice;
        fn from_str(s: &str) -> Result<Self, Self::Err> {
            match s {
                "cpu" | "flex" => Ok(BackendKind::Cpu),
                "wgpu" | "gpu" => Ok(BackendKind::Wgpu),
                other => Err(crate::choice::UnknownChoice::new("backend", other, "'cpu' or 'wgpu'")),
            }
        }
    }

    /// Creates the device for `kind`. For wgpu the adapter is acquired eagerly so that a machine
    /// without one gets a clear error here, not a panic inside the first kernel launch.
    pub fn device(kind: BackendKind) -> Result<Device, String> {
        match kind {
            BackendKind::Cpu => Ok(Device::flex()),
            // A wgpu runtime initialises once per process; later calls reuse the same device.
            BackendKind::Wgpu => {
                static WGPU: std::sync::OnceLock<Result<Device, String>> = std::sync::OnceLock::new();
                WGPU.get_or_init(|| {
                    Device::wgpu_options().init().map_err(|e| {
                        format!(
                            "no usable wgpu adapter ({e}); on a machine without a GPU install \
                             Debian's mesa-vulkan-drivers (lavapipe), or use --backend cpu"
                        )
                    })
                })
                .clone()
            }
        }
    }

    /// The training device: the CPU backend with autodiff enabled.
    pub fn training_device() -> Device {
        Device::flex().autodiff()
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::*;

/// Whether `device` is the CPU backend (flex): the one that reports no GPU memory pool.
pub fn is_cpu(device: &burn::tensor::Device) -> bool {
    device.memory_pool_usage().is_none()
}
