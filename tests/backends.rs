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

/// The training path on wgpu: the same weights and inputs give the CPU's losses and gradients
/// (the evaluation assignment, so no Gumbel noise, which each backend draws differently).
/// The logit scale's own gradient is left out: a fresh model's scale, exp(ln 100), sits exactly
/// on its clamp at 100, where the CPU backend passes no gradient and wgpu passes one.
#[test]
fn wgpu_training_losses_and_gradients_match_the_cpu() {
    use burn::tensor::{Tensor, TensorData};
    use segclip::model::text::TokenBatch;
    use segclip::model::{Assignment, SegClip, SegClipConfig};
    use segclip::weights::model_io::{apply_tensors, model_tensors};

    let config = SegClipConfig::tiny();
    let s = config.image_size;
    let pixels: Vec<f32> = (0..2 * 3 * s * s).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    // Two captions of the tiny vocabulary, end token (the largest id) then padding.
    let pad = |mut v: Vec<i64>| {
        v.resize(config.context_length, 0);
        v
    };
    let tokens = [pad(vec![1, 17, 230, 999]), pad(vec![1, 42, 42, 5, 999])];
    let run = |model: &SegClip, device: &burn::tensor::Device| -> (f32, Vec<f32>) {
        let images = Tensor::<4>::from_data(TensorData::new(pixels.clone(), [2, 3, s, s]), device);
        let vision = model.visual.forward(images, Assignment::Eval);
        let text = model.text(&TokenBatch::new(&tokens).unwrap(), device);
        let loss = segclip::train::losses::contrastive(vision.image_embed, text, model.scale());
        let value = loss.clone().into_scalar::<f32>();
        let grads = loss.backward();
        fn norm<const D: usize>(param: &burn::module::Param<Tensor<D>>, grads: &burn::tensor::Gradients) -> f32 {
            param.val().grad(grads).expect("a gradient").powf_scalar(2.0).sum().sqrt().into_scalar::<f32>()
        }
        let norms = vec![
            norm(&model.visual.conv1.weight, &grads),
            norm(&model.visual.positional_embedding, &grads),
            norm(&model.visual.proj, &grads),
            norm(&model.text.text_projection, &grads),
        ];
        (value, norms)
    };
    let cpu = device(BackendKind::Cpu).unwrap().autodiff();
    cpu.seed(3);
    let reference = SegClip::new(&config, &cpu);
    let wgpu = device(BackendKind::Wgpu).unwrap().autodiff();
    let mut on_wgpu = SegClip::new(&config, &wgpu);
    apply_tensors(&mut on_wgpu, &model_tensors(&reference), false).unwrap();
    let (loss_cpu, grads_cpu) = run(&reference, &cpu);
    let (loss_wgpu, grads_wgpu) = run(&on_wgpu, &wgpu);
    assert!((loss_cpu - loss_wgpu).abs() <= 1e-4 * loss_cpu.abs().max(1.0), "loss {loss_cpu} vs {loss_wgpu}");
    for (a, b) in grads_cpu.iter().zip(&grads_wgpu) {
        assert!(*a > 0.0 && (a - b).abs() <= 1e-3 * a, "gradient norms {grads_cpu:?} vs {grads_wgpu:?}");
    }
}
