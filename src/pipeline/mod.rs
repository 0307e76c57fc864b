//! The published inference protocol, shared by the CLI and the page: preprocess, sliding windows,
//! image features kept per image, label embeddings cached per label, the host-side combination,
//! and the coloured overlay. Reads back from the device asynchronously, so the same code runs in
//! wasm; natively `block_on` drives it.

pub mod combine;
pub mod decode;
pub mod overlay;
pub mod preprocess;
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
use crate::weights::format::{WeightsError, WeightsFile};
use crate::weights::model_io;
use combine::{CombineOptions, WindowFeatures};
pub use preprocess::Rgb;

/// Settings of a segmentation run.
#[derive(Clone, Debug)]
pub struct SegmentOptions {
    /// Prompt templates; several are averaged (embeddings normalised, averaged, renormalised).
    pub templates: Vec<String>,
    pub bg_thresh: f32,
    /// Background prompts: texts that compete with the labels, a region they win being
    /// background. SegCLIP models: per group (src/pipeline/combine.rs `group_scores`); empty
    /// for the release's threshold rule alone; a model trained to name its backgrounds carries
    /// them in its weights file's header (src/weights/format.rs). Dense models: the words of
    /// the background class, from the file's protocol (`DenseProtocol::background`); a word
    /// that is also a label is left out.
    pub background_prompts: Vec<String>,
    pub top_k: usize,
    /// Short side of the rescaled image; 0 = the model's input size (224 for the release, as the
    /// published protocol; the bundled model's 96).
    pub short_side: usize,
    pub long_cap: usize,
    /// Window side and stride in pixels of the rescaled image; 0 = the model's input size.
    pub window: usize,
    pub stride: usize,
    /// The whole rescaled image in one pass instead of windows, positional embeddings
    /// interpolated to its grid (NACLIP's protocol; `window` and `stride` unused).
    pub whole_image: bool,
    /// Windows encoded per model call (bounds memory).
    pub batch: usize,
    /// Not in the release: SegCLIP models only. When set, every Felzenszwalb superpixel of the
    /// rescaled image takes the mean of its pixels' scores before the argmax, so label edges
    /// follow the image's colour edges instead of the patch grid's 8 or 16 px steps (the
    /// paper's superpixel loss trains the groups toward the same partition: src/train/losses.rs).
    /// A model's manifest entry records its own (src/weights/manifest.rs).
    pub superpixels: Option<superpixels::FelzenszwalbParams>,
    /// Not in the release: SegCLIP models only. When set, the mirrored image goes through the
    /// model too and its scores, mirrored back, are averaged with the image's (test-time
    /// augmentation by flipping; the training crops are flipped as often, src/train/augment.rs).
    /// Twice the image tower's work.
    pub flip: bool,
    /// Not in the release: SegCLIP models only. When set, the score map, after the superpixel
    /// snapping, is refined by pixel-adaptive averaging over neighbours of like colour
    /// (src/pipeline/refine.rs), so labels stop at the image's edges even where a superpixel
    /// straddles an object and its background. A model's manifest entry records its own.
    pub refine: Option<refine::RefineParams>,
    /// Not in the release: SegCLIP models only. More short sides the image is rescaled to, each
    /// run through the same windows (and mirrored with `flip`); their score maps, resized to the
    /// `short_side` map, are averaged with it before the snapping (multi-scale test-time
    /// augmentation). Empty: the one scale.
    pub extra_short_sides: Vec<usize>,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            templates: vec![labels::DEFAULT_TEMPLATE.to_string()],
            bg_thresh: 0.8,
            background_prompts: Vec::new(),
            top_k: 5,
            short_side: 0,
            long_cap: 2048,
            window: 0,
            stride: 0,
            whole_image: false,
            batch: 4,
            superpixels: None,
            flip: false,
            refine: None,
            extra_short_sides: Vec::new(),
        }
    }
}

impl SegmentOptions {
    /// A model's own windows (its manifest entry, src/weights/manifest.rs): the image's short
    /// side and the stride of windows of the model's input size. The CLI and the page both
    /// apply them through here.
    pub fn use_windows(&mut self, w: crate::weights::manifest::WindowProtocol) {
        self.short_side = w.short_side;
        self.window = 0;
        self.whole_image = false;
        self.stride = w.stride;
        self.extra_short_sides = w.extra_short_sides;
    }
}

/// What the model computed for one image; a label change reuses it.
#[derive(Clone, Debug)]
pub struct ImageFeatures {
    pub width: usize,
    pub height: usize,
    pub resized: (usize, usize),
    pub windows: Vec<(WindowFeatures, Vec<usize>)>,
    /// The windows of the mirrored image (`SegmentOptions::flip`; empty without it).
    pub mirrored: Vec<(WindowFeatures, Vec<usize>)>,
    /// Superpixel of each pixel of the rescaled image (`SegmentOptions::superpixels`), row-major.
    pub segments: Option<Vec<u32>>,
    /// The refinement's neighbour weights over the rescaled image, when `SegmentOptions::refine`
    /// was set as the image was encoded (they depend on the image alone).
    pub affinity: Option<refine::Affinity>,
    /// The windows at each of `SegmentOptions::extra_short_sides`: the rescaled size, the
    /// windows, the mirrored image's windows (empty without `flip`).
    pub extra_scales: Vec<ScaleFeatures>,
}

/// An image's windows at one more scale (`SegmentOptions::extra_short_sides`).
#[derive(Clone, Debug)]
pub struct ScaleFeatures {
    pub resized: (usize, usize),
    pub windows: Vec<(WindowFeatures, Vec<usize>)>,
    pub mirrored: Vec<(WindowFeatures, Vec<usize>)>,
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

/// The model behind a segmenter; the weights file decides which (its `dense` header field).
pub enum ImageModel {
    /// SegCLIP: regions from its group module, named by their embeddings.
    Groups(SegClip),
    /// A plain CLIP run densely (NACLIP or ClearCLIP, src/model/dense.rs), every patch named.
    Dense(DenseClip, DenseProtocol),
}

impl ImageModel {
    fn text(&self, tokens: &TokenBatch, device: &Device) -> Tensor<2> {
        match self {
            ImageModel::Groups(m) => m.text(tokens, device),
            ImageModel::Dense(m, _) => m.text(tokens, device),
        }
    }
}

pub struct Segmenter {
    pub model: ImageModel,
    pub config: SegClipConfig,
    pub tokenizer: ClipTokenizer,
    pub device: Device,
    pub options: SegmentOptions,
    pub counters: Counters,
    logit_scale: Option<f32>,
    /// (templates, label) -> normalised embedding.
    label_cache: HashMap<(String, String), Vec<f32>>,
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

async fn read(t: Tensor<2>) -> Result<Vec<f32>, String> {
    let data = t.into_data_async().await.map_err(|e| format!("reading back from the device: {e:?}"))?;
    data.try_to_vec::<f32>().map_err(|e| format!("unexpected tensor dtype: {e:?}"))
}

impl Segmenter {
    /// Fails when the model's text tower cannot read the tokenizer's ids.
    pub fn new(model: SegClip, config: SegClipConfig, tokenizer: ClipTokenizer, device: Device) -> Result<Self, String> {
        Self::build(ImageModel::Groups(model), config, tokenizer, device)
    }

    fn build(model: ImageModel, config: SegClipConfig, tokenizer: ClipTokenizer, device: Device) -> Result<Self, String> {
        let vocab = tokenizer.vocab_size();
        if config.vocab_size < vocab {
            return Err(format!(
                "the model's text vocabulary has {} tokens but the CLIP tokenizer produces ids up to {}: \
                 these weights were not made for this tokenizer",
                config.vocab_size,
                vocab - 1
            ));
        }
        Ok(Self {
            model,
            config,
            tokenizer,
            device,
            options: SegmentOptions::default(),
            counters: Counters::default(),
            logit_scale: None,
            label_cache: HashMap::new(),
        })
    }

    /// A segmenter for a plain CLIP run densely; its options start at the protocol's: short
    /// side, the whole image or its windows, templates, background words and threshold.
    pub fn new_dense(
        model: DenseClip,
        protocol: DenseProtocol,
        config: SegClipConfig,
        tokenizer: ClipTokenizer,
        device: Device,
    ) -> Result<Self, String> {
        let p = protocol.clone();
        let mut s = Self::build(ImageModel::Dense(model, protocol), config, tokenizer, device)?;
        let o = &mut s.options;
        o.short_side = p.short_side;
        o.whole_image = p.window == 0;
        o.window = p.window;
        o.stride = p.stride;
        o.templates = p.template_strings();
        o.bg_thresh = p.bg_thresh;
        o.background_prompts = p.background;
        Ok(s)
    }

    /// The segmenter a weights file describes: SegCLIP, or a dense CLIP with its protocol.
    /// Takes the file's tensors (`format::read_for_model`): the model keeps their buffers.
    pub fn from_file(file: WeightsFile<TensorData>, tokenizer: ClipTokenizer, device: Device) -> Result<Self, String> {
        let err = |e: WeightsError| e.to_string();
        let config = file.config.clone();
        match file.dense.clone() {
            None => {
                let background = file.background_prompts.clone();
                let mut s = Self::new(model_io::load_model(file, &device).map_err(err)?, config, tokenizer, device)?;
                s.options.background_prompts = background;
                Ok(s)
            }
            Some(protocol) => {
                let model = model_io::load_dense_model(file, &device).map_err(err)?;
                Self::new_dense(model, protocol, config, tokenizer, device)
            }
        }
    }

    /// The dense protocol, when this segmenter runs a plain CLIP densely.
    pub fn dense_protocol(&self) -> Option<&DenseProtocol> {
        match &self.model {
            ImageModel::Dense(_, p) => Some(p),
            ImageModel::Groups(_) => None,
        }
    }

    /// SegCLIP's learned scale (read once), or the dense protocol's.
    async fn logit_scale(&mut self) -> Result<f32, String> {
        if let Some(s) = self.logit_scale {
            return Ok(s);
        }
        let s = match &self.model {
            ImageModel::Groups(model) => read(model.scale().unsqueeze::<2>()).await?[0],
            ImageModel::Dense(_, protocol) => protocol.logit_scale,
        };
        self.logit_scale = Some(s);
        Ok(s)
    }

    /// The background words in use with these labels: a word typed as a label is a label.
    pub fn background_words(&self, labels: &[String]) -> Vec<String> {
        let typed: std::collections::HashSet<String> = labels.iter().map(|l| l.trim().to_lowercase()).collect();
        self.options.background_prompts.iter().filter(|w| !typed.contains(&w.trim().to_lowercase())).cloned().collect()
    }

    /// The embeddings this segmenter has computed with the current templates, to keep across
    /// sessions (the page stores them beside the weights).
    pub fn cached_label_embeddings(&self) -> Vec<(String, Vec<f32>)> {
        let key = self.options.templates.join("\u{1f}");
        let mut out: Vec<(String, Vec<f32>)> =
            self.label_cache.iter().filter(|((k, _), _)| *k == key).map(|((_, label), v)| (label.clone(), v.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Adds embeddings computed before (by this model, with the current templates): those
    /// labels skip the text tower. An embedding of the wrong size is refused.
    pub fn add_label_embeddings(&mut self, embeddings: Vec<(String, Vec<f32>)>) -> Result<(), String> {
        let key = self.options.templates.join("\u{1f}");
        for (label, v) in embeddings {
            if v.len() != self.config.embed_dim {
                return Err(format!("a stored embedding of \"{label}\" has {} values, the model's have {}", v.len(), self.config.embed_dim));
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
    pub async fn encode_image(&mut self, image: &Rgb) -> Result<ImageFeatures, String> {
        let mut features = self.encode_first_scale(image).await?;
        self.add_extra_scales(image, &mut features).await?;
        Ok(features)
    }

    /// `encode_image` at the `short_side` scale only (`extra_scales` left empty): a front end can
    /// show its segmentation while `add_extra_scales` runs (the page: src/web/app/schedule.rs).
    pub async fn encode_first_scale(&mut self, image: &Rgb) -> Result<ImageFeatures, String> {
        let o = &self.options;
        let short_side = if o.short_side == 0 { self.config.image_size } else { o.short_side };
        let crop = if o.window == 0 { self.config.image_size } else { o.window };
        if matches!(self.model, ImageModel::Groups(_)) {
            windows::validate_extra_short_sides(&o.extra_short_sides, short_side, crop).map_err(|e| format!("extra short sides: {e}"))?;
        }
        let prepared = preprocess::prepare(image, short_side, o.long_cap);
        let segments = match (&o.superpixels, &self.model) {
            (Some(p), ImageModel::Groups(_)) => Some(superpixels::felzenszwalb(&prepared.rgb, prepared.width, prepared.height, p)?),
            _ => None,
        };
        let affinity = match (&o.refine, &self.model) {
            (Some(_), ImageModel::Groups(_)) => Some(refine::affinity(&prepared.rgb, prepared.width, prepared.height)?),
            _ => None,
        };
        let ScaleFeatures { resized, windows, mirrored } = self.encode_scale(&prepared).await?;
        self.counters.images_encoded += 1;
        Ok(ImageFeatures { width: image.width, height: image.height, resized, windows, mirrored, segments, affinity, extra_scales: Vec::new() })
    }

    /// The windows of `image` at each of `SegmentOptions::extra_short_sides` (SegCLIP models
    /// only), added to features `encode_first_scale` made of the same image.
    pub async fn add_extra_scales(&mut self, image: &Rgb, features: &mut ImageFeatures) -> Result<(), String> {
        if !matches!(self.model, ImageModel::Groups(_)) {
            return Ok(());
        }
        for side in self.options.extra_short_sides.clone() {
            let prepared = preprocess::prepare(image, side, self.options.long_cap);
            let scale = self.encode_scale(&prepared).await?;
            features.extra_scales.push(scale);
        }
        Ok(())
    }

    /// The windows of one rescaled image, and of its mirror with `flip` (SegCLIP models only).
    async fn encode_scale(&mut self, prepared: &preprocess::Prepared) -> Result<ScaleFeatures, String> {
        let flip = self.options.flip && matches!(self.model, ImageModel::Groups(_));
        let windows = self.encode_windows(prepared).await?;
        let mirrored = if flip { self.encode_windows(&prepared.mirrored()).await? } else { Vec::new() };
        Ok(ScaleFeatures { resized: (prepared.width, prepared.height), windows, mirrored })
    }

    /// The image tower over every window of a prepared image.
    async fn encode_windows(&mut self, prepared: &preprocess::Prepared) -> Result<Vec<(WindowFeatures, Vec<usize>)>, String> {
        let o = &self.options;
        let crop = if o.window == 0 { self.config.image_size } else { o.window };
        let stride = if o.stride == 0 { crop } else { o.stride };
        let wins = if o.whole_image {
            vec![windows::Window { x: 0, y: 0, width: prepared.width, height: prepared.height }]
        } else {
            windows::windows(prepared.width, prepared.height, crop, stride)
        };
        let mut out = Vec::with_capacity(wins.len());
        // Windows of one size go through the model together, `batch` at a time.
        let mut i = 0;
        while i < wins.len() {
            let (w, h) = (wins[i].width, wins[i].height);
            let mut j = i;
            while j < wins.len() && j - i < o.batch.max(1) && (wins[j].width, wins[j].height) == (w, h) {
                j += 1;
            }
            let group = &wins[i..j];
            let mut pixels = Vec::with_capacity(group.len() * 3 * w * h);
            for win in group {
                pixels.extend(preprocess::crop(prepared, win.x, win.y, w, h));
            }
            let input = Tensor::<4>::from_data(TensorData::new(pixels, [group.len(), 3, h, w]), &self.device);
            match &self.model {
                ImageModel::Groups(model) => {
                    let encoded = model.image(input);
                    let grid = encoded.grid;
                    let [b, l, e] = encoded.group_embed.dims();
                    let p = grid[0] * grid[1];
                    let image_embed = read(encoded.image_embed).await?;
                    let group_embed = read(encoded.group_embed.reshape([b * l, e])).await?;
                    let soft = read(encoded.soft_assign.reshape([b * l, p])).await?;
                    for (k, win) in group.iter().enumerate() {
                        let mut image = image_embed[k * e..(k + 1) * e].to_vec();
                        normalise(&mut image);
                        let mut groups = group_embed[k * l * e..(k + 1) * l * e].to_vec();
                        groups.chunks_mut(e).for_each(normalise);
                        let soft = soft[k * l * p..(k + 1) * l * p].to_vec();
                        let f = WindowFeatures { window: *win, grid, soft, groups, image, patches: Vec::new() };
                        let pixel_groups = combine::pixel_groups(&f);
                        out.push((f, pixel_groups));
                    }
                }
                ImageModel::Dense(model, protocol) => {
                    let encoded = model.visual.forward(input, protocol.method, protocol.gaussian_std);
                    let grid = encoded.grid;
                    let [b, p, e] = encoded.patch_embed.dims();
                    let patches = read(encoded.patch_embed.reshape([b * p, e])).await?;
                    for (k, win) in group.iter().enumerate() {
                        let mut mine = patches[k * p * e..(k + 1) * p * e].to_vec();
                        mine.chunks_mut(e).for_each(normalise);
                        out.push((WindowFeatures { window: *win, grid, patches: mine, ..WindowFeatures::default() }, Vec::new()));
                    }
                }
            }
            self.counters.windows_encoded += group.len();
            i = j;
        }
        Ok(out)
    }

    /// Normalised embeddings of `labels` (prompted with the templates); only labels not seen
    /// before go through the text tower.
    pub async fn encode_labels(&mut self, labels: &[String]) -> Result<Vec<Vec<f32>>, String> {
        labels::validate(labels)?;
        let key = self.options.templates.join("\u{1f}");
        let missing: Vec<&String> =
            labels.iter().filter(|l| !self.label_cache.contains_key(&(key.clone(), (*l).clone()))).collect();
        self.counters.label_cache_hits += labels.len() - missing.len();
        if !missing.is_empty() {
            let context = self.config.context_length;
            let mut sequences = Vec::new();
            for label in &missing {
                for prompt in labels::prompts(label, &self.options.templates) {
                    let (ids, truncated) = self.tokenizer.encode(&prompt, context).map_err(|e| e.to_string())?;
                    if truncated {
                        return Err(format!(
                            "label \"{label}\" is too long for the text encoder: its prompt \"{prompt}\" exceeds \
                             {context} tokens"
                        ));
                    }
                    sequences.push(ids);
                }
            }
            let t = self.options.templates.len();
            // Prompts of like length go through the tower together, each batch cut after its
            // longest one (`TokenBatch::trimmed`): the 80 templates run from 8 to 16 tokens, so
            // in their own order every batch would run near the longest.
            let length = |ids: &Vec<i64>| ids.iter().rposition(|&id| id != 0).unwrap_or(0);
            let mut order: Vec<usize> = (0..sequences.len()).collect();
            order.sort_by_key(|&i| length(&sequences[i]));
            let mut embeddings = vec![Vec::new(); sequences.len()];
            for chunk in order.chunks(64) {
                let rows: Vec<Vec<i64>> = chunk.iter().map(|&i| sequences[i].clone()).collect();
                let batch = TokenBatch::new(&rows)?.trimmed();
                let e = read(self.model.text(&batch, &self.device)).await?;
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

    /// The cheap part: label embeddings + image features -> label map and summary.
    pub async fn combine(&mut self, features: &ImageFeatures, labels: &[String], embeddings: &[Vec<f32>]) -> Result<Segmentation, String> {
        if matches!(self.model, ImageModel::Dense(..)) {
            let scale = self.logit_scale().await?;
            let background = self.background_words(labels);
            let background = if background.is_empty() { Vec::new() } else { self.encode_labels(&background).await? };
            let (label_map, scores) = combine::dense_label_map(
                features.resized,
                &features.windows,
                embeddings,
                &background,
                scale,
                self.options.bg_thresh,
                features.width,
                features.height,
            );
            return Ok(summarise(features.width, features.height, label_map, scores, labels));
        }
        let map = self.group_score_map(features, embeddings).await?;
        Ok(self.finish(features, labels, map, true))
    }

    /// A combination in two steps, for a front end that shows the unrefined map while the
    /// refinement's passes run (the page: src/web/app/schedule.rs): the unrefined segmentation,
    /// and the score map that `refine_combined` finishes into exactly what `combine` returns.
    /// The windows' scores are combined once for both. `None` when no refinement applies (a
    /// dense model, no `SegmentOptions::refine`, or features encoded without its weights).
    pub async fn combine_unrefined(
        &mut self,
        features: &ImageFeatures,
        labels: &[String],
        embeddings: &[Vec<f32>],
    ) -> Result<Option<(Segmentation, combine::ScoreMap)>, String> {
        if matches!(self.model, ImageModel::Dense(..)) || self.options.refine.is_none() || features.affinity.is_none() {
            return Ok(None);
        }
        let map = self.group_score_map(features, embeddings).await?;
        Ok(Some((self.finish(features, labels, map.clone(), false), map)))
    }

    /// The second step of `combine_unrefined`: the refinement, then the label map.
    pub fn refine_combined(&self, features: &ImageFeatures, labels: &[String], map: combine::ScoreMap) -> Segmentation {
        self.finish(features, labels, map, true)
    }

    /// A SegCLIP model's score map before the refinement: every window's group scores, averaged
    /// with the mirrored image's, then with the other scales' (resized to this one), snapped to
    /// the superpixels.
    async fn group_score_map(&mut self, features: &ImageFeatures, embeddings: &[Vec<f32>]) -> Result<combine::ScoreMap, String> {
        let o = CombineOptions { bg_thresh: self.options.bg_thresh, top_k: self.options.top_k, logit_scale: self.logit_scale().await? };
        let background = if self.options.background_prompts.is_empty() {
            Vec::new()
        } else {
            let prompts = self.options.background_prompts.clone();
            self.encode_labels(&prompts).await?
        };
        // One scale's windows, averaged with its mirrored image's.
        let scale_map = |(w, h): (usize, usize), windows: &[(WindowFeatures, Vec<usize>)], mirrored: &[(WindowFeatures, Vec<usize>)]| {
            let mut map = combine::score_map(w, h, windows, embeddings, &background, &o);
            if !mirrored.is_empty() {
                combine::average_mirrored(&mut map, &combine::score_map(w, h, mirrored, embeddings, &background, &o));
            }
            map
        };
        let mut map = scale_map(features.resized, &features.windows, &features.mirrored);
        let extra: Vec<combine::ScoreMap> =
            features.extra_scales.iter().map(|s| scale_map(s.resized, &s.windows, &s.mirrored)).collect();
        combine::average_scales(&mut map, &extra);
        if let Some(segments) = &features.segments {
            combine::snap_to_segments(&mut map, segments);
        }
        Ok(map)
    }

    /// The refinement (with `refine`, when set and the features carry its weights), then the
    /// label map at the image's size.
    fn finish(&self, features: &ImageFeatures, labels: &[String], mut map: combine::ScoreMap, refine: bool) -> Segmentation {
        // Features encoded without the refinement have no weights for it; the page and the CLI
        // set their options before encoding.
        if let (true, Some(p), Some(affinity)) = (refine, self.options.refine, &features.affinity) {
            affinity.refine(&mut map.scores, map.channels, p.iterations);
        }
        let (label_map, scores) = combine::label_map(&map, features.width, features.height);
        summarise(features.width, features.height, label_map, scores, labels)
    }

    /// Image + labels -> segmentation (encodes the image; use `encode_image` + `combine` to keep
    /// the features across label edits).
    pub async fn segment(&mut self, image: &Rgb, labels: &[String]) -> Result<Segmentation, String> {
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
mod tests {
    use super::*;

    /// A freshly initialised model of the test size with the CLIP tokenizer's vocabulary and no
    /// background threshold, a 48x40 image of varied pixels, and three labels.
    fn tiny_segmenter() -> (Segmenter, Rgb, Vec<String>) {
        let config = SegClipConfig { vocab_size: 49408, ..SegClipConfig::tiny() };
        let device = Device::default();
        let tokenizer = ClipTokenizer::from_bytes(include_bytes!("../../static/tokenizer.json")).unwrap();
        let mut s = Segmenter::new(SegClip::new(&config, &device), config, tokenizer, device).unwrap();
        s.options.bg_thresh = 0.0;
        let pixels: Vec<u8> = (0..48 * 40 * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        let image = Rgb::new(48, 40, pixels).unwrap();
        let labels: Vec<String> = ["cat", "dog", "sofa"].iter().map(|l| l.to_string()).collect();
        (s, image, labels)
    }

    /// The same int8 file loaded with its weights held as f32 and as int8 (dequantised per
    /// layer as it runs) segments alike: the same scores and label maps, for a SegCLIP file and
    /// a dense one.
    #[test]
    fn a_model_held_as_int8_segments_as_the_one_held_as_f32() {
        use crate::model::dense::{DenseMethod, DenseProtocol};
        use crate::weights::format::{self, Residency};
        use crate::weights::{model_io, StorageDtype};
        let config = SegClipConfig { vocab_size: 49408, ..SegClipConfig::tiny() };
        // int8 residency is the CPU backend's (`model_io::apply_data` refuses it elsewhere).
        let device = Device::flex();
        let tensors = model_io::model_tensors(&SegClip::new(&config, &device));
        let segclip = format::write(&config, "t", StorageDtype::Int8, &tensors).unwrap();
        let tensors = model_io::model_tensors(&DenseClip::new(&config, &device));
        let dense = format::write_dense(&config, &DenseProtocol::for_method(DenseMethod::Naclip), "t", StorageDtype::Int8, &tensors).unwrap();
        let (_, image, labels) = tiny_segmenter();
        for bytes in [segclip, dense] {
            let run = |residency| {
                let file = format::read_for_model(&bytes, residency).unwrap();
                let tokenizer = ClipTokenizer::from_bytes(include_bytes!("../../static/tokenizer.json")).unwrap();
                let mut s = Segmenter::from_file(file, tokenizer, device.clone()).unwrap();
                s.options.bg_thresh = 0.0;
                s.options.templates = vec!["a photo of a {}.".into(), "{}".into()];
                block_on(s.segment(&image, &labels)).unwrap()
            };
            let (held_f32, held_int8) = (run(Residency::F32), run(Residency::Int8));
            assert_eq!(held_f32.scores, held_int8.scores);
            assert_eq!(held_f32.label_map, held_int8.label_map);
            // Scores that vary over the image: equal ones would prove little.
            assert!(held_f32.scores.iter().any(|&v| v != held_f32.scores[0]), "one score everywhere");
        }
    }

    #[test]
    fn a_word_typed_as_a_label_leaves_the_background_and_stored_embeddings_skip_the_text_tower() {
        let (mut s, _, _) = tiny_segmenter();
        s.options.background_prompts = vec!["wall".into(), "sky".into(), "Window".into()];
        assert_eq!(s.background_words(&["WALL".into(), "cat".into(), " window".into()]), vec!["sky".to_string()]);
        let labels: Vec<String> = vec!["cat".into()];
        let first = block_on(s.encode_labels(&labels)).unwrap();
        let stored = s.cached_label_embeddings();
        assert_eq!(stored, vec![("cat".to_string(), first[0].clone())]);
        s.clear_label_cache();
        s.add_label_embeddings(stored).unwrap();
        let prompts = s.counters.prompts_encoded;
        assert_eq!(block_on(s.encode_labels(&labels)).unwrap(), first);
        assert_eq!(s.counters.prompts_encoded, prompts, "a stored embedding went through the text tower again");
        let e = s.add_label_embeddings(vec![("dog".into(), vec![0.0; 3])]).unwrap_err();
        assert!(e.contains("\"dog\"") && e.contains("3 values"), "{e}");
    }

    #[test]
    fn labels_encoded_together_equal_labels_encoded_alone() {
        // Templates of different lengths, so the prompts are reordered by length across labels.
        let (mut s, _, labels) = tiny_segmenter();
        s.options.templates = vec!["{}".into(), "a very blurry and dark photo of the small {}.".into(), "a {}.".into()];
        let together = block_on(s.encode_labels(&labels)).unwrap();
        for (label, want) in labels.iter().zip(&together) {
            s.clear_label_cache();
            let alone = block_on(s.encode_labels(std::slice::from_ref(label))).unwrap();
            let worst = alone[0].iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst < 1e-5, "{label}: {worst}");
        }
        assert!(together[0].iter().zip(&together[1]).any(|(a, b)| (a - b).abs() > 1e-3), "labels differ");
    }

    #[test]
    fn a_combination_in_two_steps_ends_where_combine_does() {
        let (mut s, image, labels) = tiny_segmenter();
        s.options.refine = Some(refine::RefineParams { iterations: 3 });
        let embeddings = block_on(s.encode_labels(&labels)).unwrap();
        let features = block_on(s.encode_image(&image)).unwrap();
        let whole = block_on(s.combine(&features, &labels, &embeddings)).unwrap();
        let (preview, map) = block_on(s.combine_unrefined(&features, &labels, &embeddings)).unwrap().expect("a refinement applies");
        let refined = s.refine_combined(&features, &labels, map);
        assert_eq!((&refined.label_map, &refined.scores), (&whole.label_map, &whole.scores));
        s.options.refine = None;
        let plain = block_on(s.combine(&features, &labels, &embeddings)).unwrap();
        assert_eq!((&preview.label_map, &preview.scores), (&plain.label_map, &plain.scores));
        assert_ne!(plain.scores, whole.scores, "the refinement changed nothing: the check above proves little");
        assert!(block_on(s.combine_unrefined(&features, &labels, &embeddings)).unwrap().is_none());
    }

    #[test]
    fn more_scales_are_encoded_in_two_steps_or_one_and_change_the_map() {
        let (mut s, image, labels) = tiny_segmenter();
        s.options.flip = true;
        let embeddings = block_on(s.encode_labels(&labels)).unwrap();
        let one_scale = block_on(s.encode_image(&image)).unwrap();
        assert!(one_scale.extra_scales.is_empty());
        let plain = block_on(s.combine(&one_scale, &labels, &embeddings)).unwrap();

        let size = s.config.image_size;
        s.options.extra_short_sides = vec![size + 8, size * 2];
        let windows_before = s.counters.windows_encoded;
        let whole = block_on(s.encode_image(&image)).unwrap();
        // Every scale's windows, mirrored too, each scale at its own size.
        let per_scale: Vec<usize> = whole.extra_scales.iter().map(|e| e.windows.len()).collect();
        assert_eq!(whole.extra_scales.iter().map(|e| e.resized).collect::<Vec<_>>(), vec![(48, 40), (77, 64)]);
        assert!(whole.extra_scales.iter().all(|e| e.mirrored.len() == e.windows.len()));
        assert_eq!(s.counters.windows_encoded - windows_before, 2 * (whole.windows.len() + per_scale.iter().sum::<usize>()));
        let averaged = block_on(s.combine(&whole, &labels, &embeddings)).unwrap();
        let mut steps = block_on(s.encode_first_scale(&image)).unwrap();
        assert!(steps.extra_scales.is_empty());
        let first = block_on(s.combine(&steps, &labels, &embeddings)).unwrap();
        assert_eq!((&first.label_map, &first.scores), (&plain.label_map, &plain.scores), "the first scale alone is the one-scale map");
        block_on(s.add_extra_scales(&image, &mut steps)).unwrap();
        let two_steps = block_on(s.combine(&steps, &labels, &embeddings)).unwrap();
        assert_eq!((&two_steps.label_map, &two_steps.scores), (&averaged.label_map, &averaged.scores));
        assert_ne!(averaged.scores, plain.scores, "the scales changed nothing: the checks above prove little");

        s.options.extra_short_sides = vec![size - 1];
        let e = block_on(s.encode_image(&image)).unwrap_err();
        assert_eq!(e, format!("extra short sides: {} is below the window side {size} px", size - 1));
    }
}
