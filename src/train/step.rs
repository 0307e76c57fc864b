//! One training step's gradients: the micro-batches in turn, each split into parts that run on
//! threads of their own, the contrastive loss computed across the parts.

use std::ops::Range;
use std::sync::mpsc;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use super::config::LossSection;
use super::optim::GradientSum;
use super::{data, losses, TrainConfig, TrainError};
use crate::model::{Assignment, SegClip, SegClipConfig, TokenBatch};

fn scalar(t: Tensor<1>) -> f64 {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 scalar")[0] as f64
}

/// One step's loss terms, averaged over its micro-batches (unweighted).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepLosses {
    pub contrastive: f64,
    pub reconstruction: f64,
    pub superpixel: f64,
    pub center_usage: f64,
    /// The group-noun term (0 when off, or when no caption of the batch names a class).
    pub group_nouns: f64,
}

/// The Gumbel noise of one micro-batch, given rather than drawn: uniform samples for the full
/// pass [B, L, P] and for the masked reconstruction pass [B, L, K] (the parity test feeds
/// PyTorch's).
#[derive(Clone, Debug)]
pub struct GivenNoise {
    pub full: Tensor<3>,
    pub masked: Tensor<3>,
}

/// One step's forward and backward passes: the gradients of every loss that is on, summed over
/// the micro-batches, and the loss terms. The Gumbel noise is drawn from the device's generator,
/// or taken from `noise` (one per micro-batch).
pub fn step_gradients(
    model: &SegClip,
    model_config: &SegClipConfig,
    micro_batches: &[data::Batch],
    config: &TrainConfig,
    noise: Option<&[GivenNoise]>,
    device: &Device,
) -> Result<(GradientSum, StepLosses), TrainError> {
    let l = &config.loss;
    let mut sum = GradientSum::default();
    let (mut lc, mut lr, mut ls, mut usage, mut gn) = (0.0, 0.0, 0.0, 0.0, 0.0);
    if !(l.contrastive || l.superpixel || l.center_usage_weight > 0.0 || l.reconstruction) {
        return Err(TrainError::NoLoss);
    }
    for (micro, b) in micro_batches.iter().enumerate() {
        let terms = micro_batch_gradients(model, b, config, model_config, noise.and_then(|n| n.get(micro)), device, &mut sum)?;
        sum.count_micro_batch();
        lc += terms.contrastive;
        lr += terms.reconstruction;
        ls += terms.superpixel;
        usage += terms.center_usage;
        gn += terms.group_nouns;
    }
    let k = micro_batches.len() as f64;
    Ok((sum, StepLosses { contrastive: lc / k, reconstruction: lr / k, superpixel: ls / k, center_usage: usage / k, group_nouns: gn / k }))
}

/// A copy of `model` whose parameters are new autodiff leaves over the same values (nothing is
/// copied but the bookkeeping): gradients taken through it are found on it, under the same names.
fn own_leaves(model: &SegClip) -> SegClip {
    struct OwnLeaves;
    impl burn::module::ModuleMapper for OwnLeaves {
        fn map_float<const D: usize>(&mut self, param: burn::module::Param<Tensor<D>>) -> burn::module::Param<Tensor<D>> {
            param.map(|t| {
                let tracked = t.is_require_grad();
                let t = t.detach();
                if tracked {
                    t.require_grad()
                } else {
                    t
                }
            })
        }
    }
    model.clone().map(&mut OwnLeaves)
}

/// What a part sends the step's thread (its embeddings, detached) and gets back (the loss
/// gradients with respect to them), by the same names: image [n, E], text [n, E], and the group
/// embeddings [n, L, E] when the group-noun term is on.
struct Embeddings {
    image: Tensor<2>,
    text: Tensor<2>,
    groups: Option<Tensor<3>>,
}

/// The gradient of a loss with respect to `t`, back on the training device as a constant: what a
/// part's surrogate multiplies its own embeddings by.
fn gradient_constant<const D: usize>(t: &Tensor<D>, grads: &burn::tensor::Gradients, device: &Device) -> Tensor<D> {
    let g = t.grad(grads).expect("the embeddings took part in the loss");
    Tensor::from_data(g.into_data(), device)
}

/// Why a part of a micro-batch stopped short.
enum PartFailure {
    /// Its own error.
    Failed(TrainError),
    /// Another part failed and closed this one's gradient channel: nothing of its own to report.
    Released,
}

impl<E: Into<TrainError>> From<E> for PartFailure {
    fn from(e: E) -> Self {
        Self::Failed(e.into())
    }
}

/// One micro-batch's forward and backward passes, its gradients added to `sum`; the loss terms
/// (unweighted, as the whole micro-batch's).
///
/// The samples are split into two parts that run on two threads: burn's element-wise kernels are
/// single-threaded, and one pass alone kept one of this machine's two cores busy
/// (docs/benchmarks.md, "Training step"). Every loss but the contrastive one is a mean over
/// samples (superpixel KL, reconstruction), so the whole batch's is the parts' weighted by their
/// share. The contrastive loss couples all samples through their embeddings: each part sends its
/// embeddings here, the loss and its gradient with respect to the embeddings are computed here on
/// the whole batch, and each part back-propagates `<embedding, that gradient>` through its own
/// graph. The gradients add up to the whole batch's (tests/train_parity.rs holds them to
/// PyTorch's). All random draws happen on this thread, in a fixed order, so a run stays a
/// function of its seed. The center-usage term is not a per-sample mean: with it on, one part.
/// The group-noun term couples the samples like the contrastive loss and goes the same way: the
/// parts send their group embeddings too, and the noun prompts are encoded here.
fn micro_batch_gradients(
    model: &SegClip,
    b: &data::Batch,
    config: &TrainConfig,
    model_config: &SegClipConfig,
    given: Option<&GivenNoise>,
    device: &Device,
    sum: &mut GradientSum,
) -> Result<StepLosses, TrainError> {
    let l = &config.loss;
    let inputs = PartInputs::new(model, b, l, model_config, given, device);
    let nouns = b.nouns.as_ref().filter(|_| l.group_nouns_weight > 0.0 && l.contrastive);
    let n = b.batch;
    let parts: Vec<Range<usize>> = if n >= 2 && l.center_usage_weight == 0.0 { vec![0..n / 2, n / 2..n] } else { vec![0..n] };

    std::thread::scope(|scope| -> Result<StepLosses, TrainError> {
        let mut exchange = Exchange { to_parts: Vec::new(), from_parts: Vec::new(), parts: parts.clone() };
        let mut handles = Vec::new();
        for range in parts {
            // Image, text and (for the group-noun term) group embeddings, detached, to this
            // thread, their loss gradients back. A part that fails drops its sender; its error
            // comes back through `join`.
            let (embed_tx, embed_rx) = mpsc::channel::<Embeddings>();
            let (grad_tx, grad_rx) = mpsc::channel::<Embeddings>();
            exchange.to_parts.push(grad_tx);
            exchange.from_parts.push(embed_rx);
            let part = Part { model, batch: b, loss: l, range, inputs: inputs.clone(), group_nouns: nouns.is_some(), device };
            handles.push(scope.spawn(move || part.gradients(embed_tx, grad_rx)));
        }
        let (contrastive, group_nouns) = exchange.contrastive_gradients(model, config, nouns, device, sum)?;
        drop(exchange);
        let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("a training thread panicked")).collect();
        sum_parts(results, StepLosses { contrastive, group_nouns, ..StepLosses::default() }, config.optim.freeze_embeddings, sum)
    })
}

/// The whole micro-batch's tensors that its parts narrow to their samples: the images and the
/// Gumbel noise of the full pass and (when the reconstruction loss is on) the masked one.
#[derive(Clone)]
struct PartInputs {
    images: Tensor<4>,
    full_noise: Tensor<3>,
    masked_noise: Option<Tensor<3>>,
}

impl PartInputs {
    /// The images of `b` on `device`, and the noise given, or drawn here (full pass first).
    fn new(model: &SegClip, b: &data::Batch, l: &LossSection, model_config: &SegClipConfig, given: Option<&GivenNoise>, device: &Device) -> Self {
        let n = b.batch;
        let images = Tensor::<4>::from_data(TensorData::new(b.images.clone(), [n, 3, b.size, b.size]), device);
        let centers = model.visual.group.semantic_center.dims()[0];
        let grid = b.size / model_config.patch_size;
        let uniform = |shape: [usize; 3]| Tensor::<3>::random(shape, burn::tensor::Distribution::Uniform(1e-10, 1.0), device);
        let full_noise = match given {
            Some(g) => g.full.clone(),
            None => uniform([n, centers, grid * grid]),
        };
        let masked_noise = match (l.reconstruction, given) {
            (false, _) => None,
            (true, Some(g)) => Some(g.masked.clone()),
            (true, None) => Some(uniform([n, centers, b.keep.first().map_or(0, Vec::len)])),
        };
        Self { images, full_noise, masked_noise }
    }
}

/// One part of a micro-batch: the samples `range` of `batch`, run on a thread of its own.
struct Part<'a> {
    model: &'a SegClip,
    batch: &'a data::Batch,
    loss: &'a LossSection,
    range: Range<usize>,
    inputs: PartInputs,
    /// Whether the step's thread wants the group embeddings too (the group-noun term is on).
    group_nouns: bool,
    device: &'a Device,
}

/// What a part hands back: its loss terms (weighted by its share of the micro-batch), its
/// gradients, and the model copy they were taken on.
type PartOutput = (StepLosses, Vec<burn::tensor::Gradients>, SegClip);

impl Part<'_> {
    /// The part's forward and backward passes. Its embeddings go to the step's thread through
    /// `embed_tx` and their contrastive gradients come back through `grad_rx`.
    fn gradients(self, embed_tx: mpsc::Sender<Embeddings>, grad_rx: mpsc::Receiver<Embeddings>) -> Result<PartOutput, PartFailure> {
        // burn's autodiff merges graphs that share a leaf, and a graph's backward pass holds its
        // lock throughout: on the shared parameters the two parts would take turns. Each part
        // works on its own leaves over the same values.
        let model = &own_leaves(self.model);
        let mut out = StepLosses::default();
        let mut grads = Vec::new();
        let images = self.inputs.images.clone().narrow(0, self.range.start, self.range.len());
        let terms = self.full_pass(model, images.clone(), &embed_tx, &grad_rx, &mut out)?;
        if let Some(total) = terms.into_iter().reduce(|a, b| a + b) {
            grads.push(total.backward());
        }
        if let Some(g) = self.reconstruction(model, images, &mut out)? {
            grads.push(g);
        }
        Ok((out, grads, model.clone()))
    }

    /// The full pass's weighted loss terms: superpixel KL, center usage, and the contrastive
    /// surrogate (`<embedding, its gradient>` from the step's thread).
    fn full_pass(
        &self,
        model: &SegClip,
        images: Tensor<4>,
        embed_tx: &mpsc::Sender<Embeddings>,
        grad_rx: &mpsc::Receiver<Embeddings>,
        out: &mut StepLosses,
    ) -> Result<Vec<Tensor<1>>, PartFailure> {
        let (l, range, device) = (self.loss, self.range.clone(), self.device);
        let (start, len) = (range.start, range.len());
        let share = len as f64 / self.batch.batch as f64;
        let uniform = self.inputs.full_noise.clone().narrow(0, start, len);
        let vision = model.visual.forward(images, Assignment::GumbelGiven { tau: l.gumbel_tau, uniform });
        let text = if l.contrastive { Some(model.text(&TokenBatch::new(&self.batch.tokens[range.clone()]).map_err(TrainError::Other)?.trimmed(), device)) } else { None };
        let mut terms: Vec<Tensor<1>> = Vec::new();
        if l.superpixel {
            let sp = self.batch.superpixels.as_ref().ok_or(TrainError::Internal("batch without superpixels"))?;
            let loss = losses::superpixel_kl(vision.hard_assign.clone(), &sp[range.clone()], device);
            out.superpixel = scalar(loss.clone()) * share;
            terms.push(loss * (l.superpixel_weight * share));
        }
        if l.center_usage_weight > 0.0 {
            let loss = losses::center_usage(vision.soft_assign.clone());
            out.center_usage = scalar(loss.clone());
            terms.push(loss * l.center_usage_weight);
        }
        if let Some(text) = &text {
            let groups = self.group_nouns.then(|| vision.group_embed.clone().detach());
            let _ = embed_tx.send(Embeddings { image: vision.image_embed.clone().detach(), text: text.clone().detach(), groups });
            let g = grad_rx.recv().map_err(|_| PartFailure::Released)?;
            let mut surrogate = (vision.image_embed.clone() * g.image).sum() + (text.clone() * g.text).sum();
            if let Some(g_groups) = g.groups {
                surrogate = surrogate + (vision.group_embed.clone() * g_groups).sum();
            }
            terms.push(surrogate);
        }
        Ok(terms)
    }

    /// The masked reconstruction pass's gradients (none when that loss is off).
    fn reconstruction(&self, model: &SegClip, images: Tensor<4>, out: &mut StepLosses) -> Result<Option<burn::tensor::Gradients>, PartFailure> {
        let Some(masked) = &self.inputs.masked_noise else { return Ok(None) };
        let (l, range) = (self.loss, self.range.clone());
        let (start, len) = (range.start, range.len());
        let share = len as f64 / self.batch.batch as f64;
        let uniform = masked.clone().narrow(0, start, len);
        let recon = model
            .reconstruct(images, &self.batch.keep[range], Assignment::GumbelGiven { tau: l.gumbel_tau, uniform })
            .ok_or(TrainError::Internal("reconstruction is on but the model has no reconstruction heads"))?;
        out.reconstruction = scalar(recon.loss.clone()) * share;
        Ok(Some((recon.loss * (l.reconstruction_weight * share)).backward()))
    }
}

/// The step's thread's ends of the parts' channels, in the parts' order.
struct Exchange {
    to_parts: Vec<mpsc::Sender<Embeddings>>,
    from_parts: Vec<mpsc::Receiver<Embeddings>>,
    parts: Vec<Range<usize>>,
}

impl Exchange {
    /// The contrastive loss (and the group-noun term) over the whole micro-batch, on the parts'
    /// embeddings: each part gets its rows of the gradients back, and the gradients of this
    /// thread's graph (the logit scale, the noun prompts' text tower) go into `sum`. Returns the
    /// two terms (0 when the contrastive loss is off). When a part fails, the others are
    /// released (their gradient channels close as this is dropped) and `join` reports it.
    fn contrastive_gradients(
        &self,
        model: &SegClip,
        config: &TrainConfig,
        nouns: Option<&data::NounPrompts>,
        device: &Device,
        sum: &mut GradientSum,
    ) -> Result<(f64, f64), TrainError> {
        let l = &config.loss;
        let received: Option<Vec<Embeddings>> = if l.contrastive { self.from_parts.iter().map(|rx| rx.recv().ok()).collect() } else { None };
        let Some(received) = received else { return Ok((0.0, 0.0)) };
        let cat2 = |f: fn(&Embeddings) -> &Tensor<2>| Tensor::cat(received.iter().map(|e| f(e).clone()).collect(), 0).require_grad();
        let image = cat2(|e| &e.image);
        let text = cat2(|e| &e.text);
        let loss = losses::contrastive(image.clone(), text.clone(), model.scale());
        let contrastive = scalar(loss.clone());
        let mut total = loss;
        let mut group_nouns = 0.0;
        let groups = match nouns {
            Some(nouns) => {
                let groups: Option<Vec<Tensor<3>>> = received.iter().map(|e| e.groups.clone()).collect();
                let groups = Tensor::cat(groups.ok_or(TrainError::Internal("a part sent no group embeddings"))?, 0).require_grad();
                let prompts = model.text(&TokenBatch::new(&nouns.tokens).map_err(TrainError::Other)?.trimmed(), device);
                let term = losses::group_nouns(groups.clone(), prompts, &nouns.named, &nouns.unknown, model.scale());
                group_nouns = scalar(term.clone());
                total = total + term * l.group_nouns_weight;
                Some(groups)
            }
            None => None,
        };
        let grads = total.backward();
        self.send_back(&image, &text, groups.as_ref(), &grads, device);
        sum.add_part(model, &grads, config.optim.freeze_embeddings);
        Ok((contrastive, group_nouns))
    }

    /// Sends each part its rows of the loss gradients with respect to the embeddings.
    fn send_back(&self, image: &Tensor<2>, text: &Tensor<2>, groups: Option<&Tensor<3>>, grads: &burn::tensor::Gradients, device: &Device) {
        let (g_image, g_text) = (gradient_constant(image, grads, device), gradient_constant(text, grads, device));
        let g_groups = groups.map(|g| gradient_constant(g, grads, device));
        for (tx, range) in self.to_parts.iter().zip(&self.parts) {
            let (start, len) = (range.start, range.len());
            let _ = tx.send(Embeddings {
                image: g_image.clone().narrow(0, start, len),
                text: g_text.clone().narrow(0, start, len),
                groups: g_groups.as_ref().map(|g| g.clone().narrow(0, start, len)),
            });
        }
    }
}

/// The micro-batch's loss terms: `total` (the contrastive and group-noun terms) plus the parts'
/// own, their gradients added to `sum`. A failing part's own error is reported, not the release
/// of a part it stopped.
fn sum_parts(results: Vec<Result<PartOutput, PartFailure>>, mut total: StepLosses, freeze: bool, sum: &mut GradientSum) -> Result<StepLosses, TrainError> {
    let mut released = false;
    let mut parts = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Err(PartFailure::Failed(e)) => return Err(e),
            Err(PartFailure::Released) => released = true,
            Ok(part) => parts.push(part),
        }
    }
    if released {
        return Err(TrainError::Internal("a part of the batch was released, but no part reported a failure"));
    }
    for (part, grads, own) in parts {
        total.reconstruction += part.reconstruction;
        total.superpixel += part.superpixel;
        total.center_usage += part.center_usage;
        for g in &grads {
            sum.add_part(&own, g, freeze);
        }
    }
    Ok(total)
}
