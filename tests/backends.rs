//! Every native backend computes the shared self-check (matmul + softmax) correctly: the CPU
//! backend the CLI uses, and wgpu, which runs the page's WGSL kernels (on lavapipe without a GPU).

use segclip::backend::{device, BackendKind};
use segclip::selfcheck;

fn check(kind: BackendKind) {
    let device = device(kind).unwrap_or_else(|e| panic!("{kind}: {e}"));
    let data = selfcheck::on_device(&device).into_data();
    let err = selfcheck::max_abs_error(&data).unwrap();
    assert!(err <= selfcheck::TOLERANCE, "{kind}: max abs error {err}");
}

#[test]
fn cpu_backend_computes_correctly() {
    check(BackendKind::Cpu);
}

#[test]
fn wgpu_backend_computes_correctly() {
    check(BackendKind::Wgpu);
}

#[test]
fn autodiff_device_computes_gradients() {
    use burn::tensor::Tensor;
    let device = segclip::backend::training_device();
    let x = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &device).require_grad();
    let y = (x.clone() * x.clone()).sum();
    let grads = y.backward();
    let g = x.grad(&grads).expect("gradient").into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(g, vec![2.0, 4.0, 6.0]);
}
