//! A small, real computation that proves a device computes correctly before we trust it with a
//! model: a matrix product plus a softmax (the two kernels attention is made of), compared with the
//! same computation on the host in f64. The page runs it after picking a backend; the native tests
//! run it on every backend the machine offers.

use burn::tensor::{activation::softmax, Device, Tensor, TensorData};

/// Size of the check: large enough to go through tiled matmul kernels, small enough to run in a
/// fraction of a second on a software WebGPU adapter (~0.15 GFLOP/s).
pub const N: usize = 64;

/// Deterministic, non-trivial inputs (no RNG, so host and device see the same numbers everywhere).
pub fn inputs() -> (Vec<f32>, Vec<f32>) {
    let a = (0..N * N).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
    let b = (0..N * N).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
    (a, b)
}

/// `softmax(A B / 8)` along rows, computed on the host in f64 as the reference.
pub fn reference() -> Vec<f32> {
    let (a, b) = inputs();
    let mut out = vec![0f32; N * N];
    for i in 0..N {
        let mut row = vec![0f64; N];
        for (j, r) in row.iter_mut().enumerate() {
            *r = (0..N).map(|k| a[i * N + k] as f64 * b[k * N + j] as f64).sum::<f64>() / 8.0;
        }
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        for j in 0..N {
            out[i * N + j] = ((row[j] - max).exp() / sum) as f32;
        }
    }
    out
}

/// The same computation as a lazy tensor on `device`; read it back with `into_data` natively or
/// `into_data_async` in wasm.
pub fn on_device(device: &Device) -> Tensor<2> {
    let (a, b) = inputs();
    let a = Tensor::<2>::from_data(TensorData::new(a, [N, N]), device);
    let b = Tensor::<2>::from_data(TensorData::new(b, [N, N]), device);
    softmax(a.matmul(b) / 8.0, 1)
}

/// Largest absolute difference between a device result and the reference.
pub fn max_abs_error(device_result: &TensorData) -> Result<f32, String> {
    let got = device_result
        .try_to_vec::<f32>()
        .map_err(|e| format!("self-check result is not f32: {e:?}"))?;
    let want = reference();
    if got.len() != want.len() {
        return Err(format!("self-check returned {} values, expected {}", got.len(), want.len()));
    }
    Ok(got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max))
}

/// Tolerance for f32 kernels against the f64 reference.
pub const TOLERANCE: f32 = 1e-4;
