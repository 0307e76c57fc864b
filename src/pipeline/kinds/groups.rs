//! SegCLIP: the image tower's groups, named by their embeddings (the published protocol's
//! steps 1-5, src/pipeline/combine.rs), averaged over the mirrored image and the scales, and
//! snapped to superpixels.

use burn::tensor::{Device, Tensor};

use super::{normalise, read, KindModel, LocalFuture, Scored};
use crate::model::{SegClip, TokenBatch};
use crate::pipeline::combine::{self, CombineOptions, EncodedWindows, GroupWindow, ScoreMap};
use crate::pipeline::protocol::{Kind, Protocol};
use crate::pipeline::windows::Window;
use crate::pipeline::{ImageFeatures, PipelineError};

/// A SegCLIP model, with the background prompts its file's header carries.
pub struct GroupModel {
    pub model: SegClip,
    pub background_prompts: Vec<String>,
    /// The group module's centers (the model's config), for `describe`.
    pub centers: usize,
}

impl KindModel for GroupModel {
    fn kind(&self) -> Kind {
        Kind::Groups
    }

    fn describe(&self) -> String {
        let centers = self.centers;
        match self.background_prompts.len() {
            0 => format!("{centers} centers"),
            // Background is also decided by the prompts the model was trained to match.
            n => format!("{centers} centers, {n} background prompts"),
        }
    }

    fn protocol(&self) -> Protocol {
        Protocol { background_prompts: self.background_prompts.clone(), ..Protocol::default() }
    }

    fn embed_text(&self, tokens: &TokenBatch, device: &Device) -> Tensor<2> {
        self.model.text(tokens, device)
    }

    fn logit_scale(&self) -> LocalFuture<'_, Result<f32, PipelineError>> {
        Box::pin(async move { Ok(read(self.model.scale().unsqueeze::<2>()).await?[0]) })
    }

    fn encode_windows<'a>(&'a self, input: Tensor<4>, windows: &'a [Window]) -> LocalFuture<'a, Result<EncodedWindows, PipelineError>> {
        Box::pin(async move {
            let encoded = self.model.image(input);
            let grid = encoded.grid;
            let [b, l, e] = encoded.group_embed.dims();
            let p = grid[0] * grid[1];
            let image_embed = read(encoded.image_embed).await?;
            let group_embed = read(encoded.group_embed.reshape([b * l, e])).await?;
            let soft = read(encoded.soft_assign.reshape([b * l, p])).await?;
            let mut out = Vec::with_capacity(windows.len());
            for (k, win) in windows.iter().enumerate() {
                let mut image = image_embed[k * e..(k + 1) * e].to_vec();
                normalise(&mut image);
                let mut groups = group_embed[k * l * e..(k + 1) * l * e].to_vec();
                groups.chunks_mut(e).for_each(normalise);
                let soft = soft[k * l * p..(k + 1) * l * p].to_vec();
                let f = GroupWindow { window: *win, grid, soft, groups, image };
                let pixel_groups = combine::pixel_groups(&f);
                out.push((f, pixel_groups));
            }
            Ok(EncodedWindows::Groups(out))
        })
    }

    /// Every window's group scores, averaged with the mirrored image's, then with the other
    /// scales' (resized to this one), snapped to the superpixels; the refinement follows.
    fn score(
        &self,
        features: &ImageFeatures,
        labels: &[Vec<f32>],
        background: &[Vec<f32>],
        protocol: &Protocol,
        logit_scale: f32,
    ) -> Result<Scored, PipelineError> {
        fn groups(w: &EncodedWindows) -> Result<&[(GroupWindow, Vec<usize>)], PipelineError> {
            match w {
                EncodedWindows::Groups(g) => Ok(g),
                EncodedWindows::Patches(_) => Err(PipelineError::FeaturesOfAnotherKind),
            }
        }
        let o = CombineOptions { bg_thresh: protocol.bg_thresh, top_k: protocol.top_k, logit_scale };
        // One scale's windows, averaged with its mirrored image's.
        let scale_map = |(w, h): (usize, usize), windows: &EncodedWindows, mirrored: &Option<EncodedWindows>| -> Result<ScoreMap, PipelineError> {
            let mut map = combine::score_map(w, h, groups(windows)?, labels, background, &o);
            if let Some(m) = mirrored {
                combine::average_mirrored(&mut map, &combine::score_map(w, h, groups(m)?, labels, background, &o));
            }
            Ok(map)
        };
        let mut map = scale_map(features.resized, &features.windows, &features.mirrored)?;
        let extra = features.extra_scales.iter().map(|s| scale_map(s.resized, &s.windows, &s.mirrored)).collect::<Result<Vec<_>, _>>()?;
        combine::average_scales(&mut map, &extra);
        if let Some(segments) = &features.segments {
            combine::snap_to_segments(&mut map, segments);
        }
        Ok(Scored::Map(map))
    }
}
