//! The published inference protocol, shared by the CLI and the page: preprocess, sliding windows,
//! image features kept per image, label embeddings cached per label, the host-side combination,
//! and the coloured overlay. What differs between a SegCLIP file and a plain CLIP run densely
//! lives in `kinds`, behind one trait; every setting lives in `protocol::Protocol`. Reads back
//! from the device asynchronously, so the same code runs in wasm; natively `block_on` drives it.

pub mod combine;
pub mod decode;
mod error;
pub mod kinds;
pub mod manifest;
pub mod overlay;
pub mod preprocess;
pub mod protocol;
pub mod refine;
pub mod superpixels;
pub mod windows;

use std::collections::HashMap;

use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;

use crate::labels;
use crate::model::dense::{DenseClip, DenseProtocol};
use crate::model::{SegClip, SegClipConfig, TokenBatch};
use crate::tokenizer::ClipTokenizer;
use crate::weights::format::WeightsFile;
use crate::weights::model_io;
use combine::EncodedWindows;
pub use error::{BadValue, PipelineError};
use kinds::{normalise, read, KindModel, Scored};
pub use preprocess::Rgb;
pub use protocol::{Kind, Protocol};

/// What the model computed for one image; a label change reuses it.
#[derive(Clone, Debug)]
pub struct ImageFeatures {
    pub width: usize,
    pub height: usize,
    pub resized: (usize, usize),
    pub windows: EncodedWindows,
    /// The windows of the mirrored image (`Protocol::flip`).
    pub mirrored: Option<EncodedWindows>,
    /// Superpixel of each pixel of the rescaled image (`Protocol::superpixels`), row-major.
    pub segments: Option<Vec<u32>>,
    /// The refinement's neighbour weights over the rescaled image, when `Protocol::refine`
    /// was set as the image was encoded (they depend on the image alone).
    pub affinity: Option<refine::Affinity>,
    /// The windows at each of `Protocol::extra_short_sides`: the rescaled size, the
    /// windows, the mirrored image's windows (empty without `flip`).
    pub extra_scales: Vec<ScaleFeatures>,
}

/// An image's windows at one more scale (`Protocol::extra_short_sides`).
#[derive(Clone, Debug)]
pub struct ScaleFeatures {
    pub resized: (usize, usize),
    pub windows: EncodedWindows,
    pub mirrored: Option<EncodedWindows>,
}

/// A label's share of the image.
#[derive(Clone, Debug, Serialize)]
pub struct LabelSummary {
    pub label: String,
    pub colour: [u8; 3],
    pub pixels: usize,
    pub area_share: f64,
    pub mean_score: f32,
}

/// The result for one image and label list.
#[derive(Clone, Debug, Serialize)]
pub struct Segmentation {
    pub width: usize,
    pub height: usize,
    /// 0 = background, i = `labels[i - 1]`, row-major.
    #[serde(skip)]
    pub label_map: Vec<u8>,
    /// Each pixel's winning score.
    #[serde(skip)]
    pub scores: Vec<f32>,
    pub labels: Vec<LabelSummary>,
    pub background_share: f64,
}

/// Counters that show what work a call did (the page shows them; tests read them).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Counters {
    pub images_encoded: usize,
    pub windows_encoded: usize,
    pub prompts_encoded: usize,
    pub label_cache_hits: usize,
}

/// The most windows one scale of an image may take: a stride of a few pixels over a large image
/// would otherwise run the image tower for hours (the bundled model's settings take 18 on a
/// square scene, ClearCLIP's a few dozen on a photo).
pub const MAX_WINDOWS: usize = 4096;

/// The shared pipeline over one model of either kind.
pub struct Segmenter {
    model: Box<dyn KindModel>,
    pub config: SegClipConfig,
    pub tokenizer: ClipTokenizer,
    pub device: Device,
    /// Every setting of a run; starts at the model kind's own (`KindModel::protocol`).
    pub protocol: Protocol,
    pub counters: Counters,
    logit_scale: Option<f32>,
    /// (templates, label) -> normalised embedding.
    label_cache: HashMap<(String, String), Vec<f32>>,
}

impl Segmenter {
    /// A SegCLIP model's segmenter. Fails when the model's text tower cannot read the
    /// tokenizer's ids.
    pub fn new(model: SegClip, config: SegClipConfig, tokenizer: ClipTokenizer, device: Device) -> Result<Self, PipelineError> {
        let centers = config.num_centers;
        Self::with_kind(Box::new(kinds::groups::GroupModel { model, background_prompts: Vec::new(), centers }), config, tokenizer, device)
    }

    /// A segmenter for a plain CLIP run densely; its protocol starts at the file's: short side,
    /// the whole image or its windows, templates, background words and threshold.
    pub fn new_dense(
        model: DenseClip,
        protocol: DenseProtocol,
        config: SegClipConfig,
        tokenizer: ClipTokenizer,
        device: Device,
    ) -> Result<Self, PipelineError> {
        Self::with_kind(Box::new(kinds::dense::DenseModel { model, protocol }), config, tokenizer, device)
    }

    fn with_kind(model: Box<dyn KindModel>, config: SegClipConfig, tokenizer: ClipTokenizer, device: Device) -> Result<Self, PipelineError> {
        let vocab = tokenizer.vocab_size();
        if config.vocab_size < vocab {
            return Err(PipelineError::Vocabulary { model: config.vocab_size, tokenizer_max: vocab - 1 });
        }
        let protocol = model.protocol();
        Ok(Self {
            model,
            config,
            tokenizer,
            device,
            protocol,
            counters: Counters::default(),
            logit_scale: None,
            label_cache: HashMap::new(),
        })
    }

    /// The segmenter a weights file describes: SegCLIP (with the background prompts its header
    /// carries), or a dense CLIP with its protocol. Takes the file's tensors
    /// (`format::read_for_model`): the model keeps their buffers.
    pub fn from_file(file: WeightsFile<TensorData>, tokenizer: ClipTokenizer, device: Device) -> Result<Self, PipelineError> {
        let config = file.config.clone();
        let model: Box<dyn KindModel> = match file.dense.clone() {
            None => {
                let background_prompts = file.background_prompts.clone();
                let centers = config.num_centers;
                Box::new(kinds::groups::GroupModel { model: model_io::load_model(file, &device)?, background_prompts, centers })
            }
            Some(protocol) => Box::new(kinds::dense::DenseModel { model: model_io::load_dense_model(file, &device)?, protocol }),
        };
        Self::with_kind(model, config, tokenizer, device)
    }

    /// Which kind of model this segmenter runs.
    pub fn kind(&self) -> Kind {
        self.model.kind()
    }

    /// One line naming the model for a front end.
    pub fn describe(&self) -> String {
        self.model.describe()
    }

    /// The model's own protocol, before any manifest or user setting.
    pub fn own_protocol(&self) -> Protocol {
        self.model.protocol()
    }

    /// Replaces the protocol after checking it for this model (`Protocol::check`): a setting
    /// this kind does not use is refused, not ignored.
    pub fn set_protocol(&mut self, protocol: Protocol) -> Result<(), PipelineError> {
        protocol.check(self.kind(), self.config.image_size)?;
        self.protocol = protocol;
        Ok(())
    }

    /// The model's scale of the cosine logits (read once).
    async fn logit_scale(&mut self) -> Result<f32, PipelineError> {
        if let Some(s) = self.logit_scale {
            return Ok(s);
        }
        let s = self.model.logit_scale().await?;
        self.logit_scale = Some(s);
        Ok(s)
    }

    /// The background words in use with these labels (`Protocol::background_words`).
    pub fn background_words(&self, labels: &[String]) -> Vec<String> {
        self.protocol.background_words(self.kind(), labels)
    }

    /// The embeddings this segmenter has computed with the current templates, to keep across
    /// sessions (the page stores them beside the weights).
    pub fn cached_label_embeddings(&self) -> Vec<(String, Vec<f32>)> {
        let key = self.protocol.templates.join("\u{1f}");
        let mut out: Vec<(String, Vec<f32>)> =
            self.label_cache.iter().filter(|((k, _), _)| *k == key).map(|((_, label), v)| (label.clone(), v.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Adds embeddings computed before (by this model, with the current templates): those
    /// labels skip the text tower. An embedding of the wrong size is refused.
    pub fn add_label_embeddings(&mut self, embeddings: Vec<(String, Vec<f32>)>) -> Result<(), PipelineError> {
        let key = self.protocol.templates.join("\u{1f}");
        for (label, v) in embeddings {
            if v.len() != self.config.embed_dim {
                return Err(PipelineError::EmbeddingSize { label, found: v.len(), expected: self.config.embed_dim });
            }
            self.label_cache.insert((key.clone(), label), v);
        }
        Ok(())
    }

    /// Forgets cached label embeddings (after a warm-up, so counters describe user work only).
    pub fn clear_label_cache(&mut self) {
        self.label_cache.clear();
    }

    /// Runs the image tower over every window of `image`, at every scale, and keeps what the
    /// combination needs.
    pub async fn encode_image(&mut self, image: &Rgb) -> Result<ImageFeatures, PipelineError> {
        let mut features = self.encode_first_scale(image).await?;
        self.add_extra_scales(image, &mut features).await?;
        Ok(features)
    }

    /// `encode_image` at the `short_side` scale only (`extra_scales` left empty): a front end can
    /// show its segmentation while `add_extra_scales` runs (the page: src/web/app/schedule.rs).
    pub async fn encode_first_scale(&mut self, image: &Rgb) -> Result<ImageFeatures, PipelineError> {
        self.protocol.check(self.kind(), self.config.image_size)?;
        let o = &self.protocol;
        let short_side = if o.short_side == 0 { self.config.image_size } else { o.short_side };
        let prepared = preprocess::prepare(image, short_side, o.long_cap);
        let segments = match &o.superpixels {
            Some(p) => Some(superpixels::felzenszwalb(&prepared.rgb, prepared.width, prepared.height, p)?),
            None => None,
        };
        let affinity = match &o.refine {
            Some(_) => Some(refine::affinity(&prepared.rgb, prepared.width, prepared.height)?),
            None => None,
        };
        let ScaleFeatures { resized, windows, mirrored } = self.encode_scale(&prepared).await?;
        self.counters.images_encoded += 1;
        Ok(ImageFeatures { width: image.width, height: image.height, resized, windows, mirrored, segments, affinity, extra_scales: Vec::new() })
    }

    /// The windows of `image` at each of `Protocol::extra_short_sides`, added to features
    /// `encode_first_scale` made of the same image.
    pub async fn add_extra_scales(&mut self, image: &Rgb, features: &mut ImageFeatures) -> Result<(), PipelineError> {
        for side in self.protocol.extra_short_sides.clone() {
            let prepared = preprocess::prepare(image, side, self.protocol.long_cap);
            let scale = self.encode_scale(&prepared).await?;
            features.extra_scales.push(scale);
        }
        Ok(())
    }

    /// The windows of one rescaled image, and of its mirror with `flip`.
    async fn encode_scale(&mut self, prepared: &preprocess::Prepared) -> Result<ScaleFeatures, PipelineError> {
        let windows = self.encode_windows(prepared).await?;
        let mirrored = if self.protocol.flip { Some(self.encode_windows(&prepared.mirrored()).await?) } else { None };
        Ok(ScaleFeatures { resized: (prepared.width, prepared.height), windows, mirrored })
    }

    /// The image tower over every window of a prepared image.
    async fn encode_windows(&mut self, prepared: &preprocess::Prepared) -> Result<EncodedWindows, PipelineError> {
        let o = &self.protocol;
        let crop = if o.window == 0 { self.config.image_size } else { o.window };
        let stride = if o.stride == 0 { crop } else { o.stride };
        let wins = if o.whole_image {
            vec![windows::Window { x: 0, y: 0, width: prepared.width, height: prepared.height }]
        } else {
            windows::windows(prepared.width, prepared.height, crop, stride)
        };
        if wins.len() > MAX_WINDOWS {
            return Err(PipelineError::Setting {
                flag: "--stride",
                message: format!("{} windows over a {}x{} image, at most {MAX_WINDOWS}: use a larger stride or window", wins.len(), prepared.width, prepared.height),
            });
        }
        let batch = o.batch.max(1);
        let mut out: Option<EncodedWindows> = None;
        // Windows of one size go through the model together, `batch` at a time.
        let mut i = 0;
        while i < wins.len() {
            let (w, h) = (wins[i].width, wins[i].height);
            let mut j = i;
            while j < wins.len() && j - i < batch && (wins[j].width, wins[j].height) == (w, h) {
                j += 1;
            }
            let group = &wins[i..j];
            let mut pixels = Vec::with_capacity(group.len() * 3 * w * h);
            for win in group {
                pixels.extend(preprocess::crop(prepared, win.x, win.y, w, h));
            }
            let input = Tensor::<4>::from_data(TensorData::new(pixels, [group.len(), 3, h, w]), &self.device);
            let encoded = self.model.encode_windows(input, group).await?;
            match &mut out {
                Some(all) => all.extend(encoded),
                None => out = Some(encoded),
            }
            self.counters.windows_encoded += group.len();
            i = j;
        }
        Ok(out.expect("an image has at least one window"))
    }

    /// Normalised embeddings of `labels` (prompted with the templates); only labels not seen
    /// before go through the text tower.
    pub async fn encode_labels(&mut self, labels: &[String]) -> Result<Vec<Vec<f32>>, PipelineError> {
        labels::validate(labels)?;
        let key = self.protocol.templates.join("\u{1f}");
        let missing: Vec<&String> =
            labels.iter().filter(|l| !self.label_cache.contains_key(&(key.clone(), (*l).clone()))).collect();
        self.counters.label_cache_hits += labels.len() - missing.len();
        if !missing.is_empty() {
            let context = self.config.context_length;
            let mut sequences = Vec::new();
            for label in &missing {
                for prompt in labels::prompts(label, &self.protocol.templates) {
                    let (ids, truncated) = self.tokenizer.encode(&prompt, context)?;
                    if truncated {
                        return Err(PipelineError::LabelTooLong { label: label.to_string(), prompt, context });
                    }
                    sequences.push(ids);
                }
            }
            let t = self.protocol.templates.len();
            // Prompts of like length go through the tower together, each batch cut after its
            // longest one (`TokenBatch::trimmed`): the 80 templates run from 8 to 16 tokens, so
            // in their own order every batch would run near the longest.
            let length = |ids: &Vec<i64>| ids.iter().rposition(|&id| id != 0).unwrap_or(0);
            let mut order: Vec<usize> = (0..sequences.len()).collect();
            order.sort_by_key(|&i| length(&sequences[i]));
            let mut embeddings = vec![Vec::new(); sequences.len()];
            for chunk in order.chunks(64) {
                let rows: Vec<Vec<i64>> = chunk.iter().map(|&i| sequences[i].clone()).collect();
                let batch = TokenBatch::new(&rows).map_err(PipelineError::Model)?.trimmed();
                let e = read(self.model.embed_text(&batch, &self.device)).await?;
                let dim = e.len() / chunk.len();
                for (&i, c) in chunk.iter().zip(e.chunks(dim)) {
                    let mut v = c.to_vec();
                    normalise(&mut v);
                    embeddings[i] = v;
                }
            }
            self.counters.prompts_encoded += sequences.len();
            for (label, per_template) in missing.iter().zip(embeddings.chunks(t)) {
                let dim = per_template[0].len();
                let mut mean = vec![0f32; dim];
                for v in per_template {
                    mean.iter_mut().zip(v).for_each(|(m, x)| *m += x);
                }
                normalise(&mut mean);
                self.label_cache.insert((key.clone(), (*label).clone()), mean);
            }
        }
        Ok(labels.iter().map(|l| self.label_cache[&(key.clone(), l.clone())].clone()).collect())
    }

    /// The model kind's scores of the labels (and the background words) on an image.
    async fn score(&mut self, features: &ImageFeatures, labels: &[String], embeddings: &[Vec<f32>]) -> Result<Scored, PipelineError> {
        self.protocol.check(self.kind(), self.config.image_size)?;
        let scale = self.logit_scale().await?;
        let words = self.background_words(labels);
        let background = if words.is_empty() { Vec::new() } else { self.encode_labels(&words).await? };
        self.model.score(features, embeddings, &background, &self.protocol, scale)
    }

    /// The cheap part: label embeddings + image features -> label map and summary.
    pub async fn combine(&mut self, features: &ImageFeatures, labels: &[String], embeddings: &[Vec<f32>]) -> Result<Segmentation, PipelineError> {
        Ok(match self.score(features, labels, embeddings).await? {
            Scored::Map(map) => self.finish(features, labels, map, true),
            Scored::Labels(label_map, scores) => summarise(features.width, features.height, label_map, scores, labels),
        })
    }

    /// A combination in two steps, for a front end that shows the unrefined map while the
    /// refinement's passes run (the page: src/web/app/schedule.rs): the unrefined segmentation,
    /// and the score map that `refine_combined` finishes into exactly what `combine` returns.
    /// The windows' scores are combined once for both. `None` when no refinement applies (no
    /// `Protocol::refine`, or features encoded without its weights).
    pub async fn combine_unrefined(
        &mut self,
        features: &ImageFeatures,
        labels: &[String],
        embeddings: &[Vec<f32>],
    ) -> Result<Option<(Segmentation, combine::ScoreMap)>, PipelineError> {
        if self.protocol.refine.is_none() || features.affinity.is_none() {
            return Ok(None);
        }
        match self.score(features, labels, embeddings).await? {
            Scored::Map(map) => Ok(Some((self.finish(features, labels, map.clone(), false), map))),
            Scored::Labels(..) => Ok(None),
        }
    }

    /// The second step of `combine_unrefined`: the refinement, then the label map.
    pub fn refine_combined(&self, features: &ImageFeatures, labels: &[String], map: combine::ScoreMap) -> Segmentation {
        self.finish(features, labels, map, true)
    }

    /// The refinement (with `refine`, when set and the features carry its weights), then the
    /// label map at the image's size.
    fn finish(&self, features: &ImageFeatures, labels: &[String], mut map: combine::ScoreMap, refine: bool) -> Segmentation {
        // Features encoded without the refinement have no weights for it; the page and the CLI
        // set their protocol before encoding.
        if let (true, Some(p), Some(affinity)) = (refine, self.protocol.refine, &features.affinity) {
            affinity.refine(&mut map.scores, map.channels, p.iterations);
        }
        let (label_map, scores) = combine::label_map(&map, features.width, features.height);
        summarise(features.width, features.height, label_map, scores, labels)
    }

    /// Image + labels -> segmentation (encodes the image; use `encode_image` + `combine` to keep
    /// the features across label edits).
    pub async fn segment(&mut self, image: &Rgb, labels: &[String]) -> Result<Segmentation, PipelineError> {
        let embeddings = self.encode_labels(labels).await?;
        let features = self.encode_image(image).await?;
        self.combine(&features, labels, &embeddings).await
    }
}

fn summarise(width: usize, height: usize, label_map: Vec<u8>, scores: Vec<f32>, labels: &[String]) -> Segmentation {
    let colours = overlay::label_colours(labels);
    let mut pixels = vec![0usize; labels.len() + 1];
    let mut score_sums = vec![0f64; labels.len() + 1];
    for (&l, &s) in label_map.iter().zip(&scores) {
        pixels[l as usize] += 1;
        score_sums[l as usize] += s as f64;
    }
    let total = (width * height).max(1) as f64;
    let summaries = labels
        .iter()
        .enumerate()
        .map(|(i, label)| LabelSummary {
            label: label.clone(),
            colour: colours[i],
            pixels: pixels[i + 1],
            area_share: pixels[i + 1] as f64 / total,
            mean_score: if pixels[i + 1] > 0 { (score_sums[i + 1] / pixels[i + 1] as f64) as f32 } else { 0.0 },
        })
        .collect();
    Segmentation { width, height, label_map, scores, labels: summaries, background_share: pixels[0] as f64 / total }
}

/// Drives a pipeline future to completion natively (reads resolve immediately on the CPU and
/// wgpu backends there).
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    pollster::block_on(future)
}

#[cfg(test)]
mod tests;
