//! A plain CLIP run densely (NACLIP or ClearCLIP, src/model/dense.rs): every patch named, the
//! labels and the background words in one softmax (src/pipeline/combine.rs `dense_label_map`).

use burn::tensor::{Device, Tensor};

use super::{normalise, read, KindModel, LocalFuture, Scored};
use crate::model::dense::{DenseClip, DenseProtocol};
use crate::model::TokenBatch;
use crate::pipeline::combine::{self, EncodedWindows, PatchWindow};
use crate::pipeline::protocol::{Kind, Protocol};
use crate::pipeline::windows::Window;
use crate::pipeline::{ImageFeatures, PipelineError};

/// A dense CLIP with the protocol its file's header records.
pub struct DenseModel {
    pub model: DenseClip,
    pub protocol: DenseProtocol,
}

impl KindModel for DenseModel {
    fn kind(&self) -> Kind {
        Kind::Dense
    }

    fn describe(&self) -> String {
        format!("plain CLIP, segmented densely with {}", self.protocol.method)
    }

    fn protocol(&self) -> Protocol {
        Protocol::for_dense(&self.protocol)
    }

    fn embed_text(&self, tokens: &TokenBatch, device: &Device) -> Tensor<2> {
        self.model.text(tokens, device)
    }

    fn logit_scale(&self) -> LocalFuture<'_, Result<f32, PipelineError>> {
        Box::pin(async move { Ok(self.protocol.logit_scale) })
    }

    fn encode_windows<'a>(&'a self, input: Tensor<4>, windows: &'a [Window]) -> LocalFuture<'a, Result<EncodedWindows, PipelineError>> {
        Box::pin(async move {
            let encoded = self.model.visual.forward(input, self.protocol.method, self.protocol.gaussian_std);
            let grid = encoded.grid;
            let [b, p, e] = encoded.patch_embed.dims();
            let patches = read(encoded.patch_embed.reshape([b * p, e])).await?;
            let out = windows
                .iter()
                .enumerate()
                .map(|(k, win)| {
                    let mut mine = patches[k * p * e..(k + 1) * p * e].to_vec();
                    mine.chunks_mut(e).for_each(normalise);
                    PatchWindow { window: *win, grid, patches: mine }
                })
                .collect();
            Ok(EncodedWindows::Patches(out))
        })
    }

    fn score(
        &self,
        features: &ImageFeatures,
        labels: &[Vec<f32>],
        background: &[Vec<f32>],
        protocol: &Protocol,
        logit_scale: f32,
    ) -> Result<Scored, PipelineError> {
        let EncodedWindows::Patches(windows) = &features.windows else { return Err(PipelineError::FeaturesOfAnotherKind) };
        let (map, scores) = combine::dense_label_map(
            features.resized,
            windows,
            labels,
            background,
            logit_scale,
            protocol.bg_thresh,
            features.width,
            features.height,
        );
        Ok(Scored::Labels(map, scores))
    }
}
