//! The CLIP text tower (docs/segclip.md, "Text encoder"): token and positional embeddings,
//! causal transformer, `ln_final`, the feature at the end-of-text token, `text_projection`.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

use super::config::SegClipConfig;
use super::layers::{blocks, dequantized, layer_norm, random_param, table_rows, ResidualBlock};

#[derive(Module, Debug)]
pub struct TextTower {
    pub token_embedding: Embedding,
    /// [context, W].
    pub positional_embedding: Param<Tensor<2>>,
    pub blocks: Vec<ResidualBlock>,
    pub ln_final: LayerNorm,
    /// [W, E], used as `x @ text_projection`.
    pub text_projection: Param<Tensor<2>>,
}

/// A batch of token sequences, with the end-of-text positions found on the host (the argmax of
/// each row's ids, since EOT is the largest id), so no device read-back is needed.
#[derive(Clone, Debug)]
pub struct TokenBatch {
    pub ids: Vec<i64>,
    pub rows: usize,
    pub len: usize,
    pub eot_positions: Vec<usize>,
}

impl TokenBatch {
    pub fn new(sequences: &[Vec<i64>]) -> Result<Self, String> {
        let rows = sequences.len();
        let len = sequences.first().map(|s| s.len()).unwrap_or(0);
        if rows == 0 || len == 0 {
            return Err("no token sequences to encode".into());
        }
        if let Some((i, s)) = sequences.iter().enumerate().find(|(_, s)| s.len() != len) {
            return Err(format!("token sequence {i} has length {}, expected {len}", s.len()));
        }
        let eot_positions = sequences
            .iter()
            .map(|s| {
                // First maximum, as torch.argmax.
                let mut best = 0;
                for (j, &id) in s.iter().enumerate() {
                    if id > s[best] {
                        best = j;
                    }
                }
                best
            })
            .collect();
        Ok(Self { ids: sequences.concat(), rows, len, eot_positions })
    }

    /// The same batch cut after its last end-of-text token. The tower is causal
    /// (`causal_mask`), so the feature at each row's EOT never sees the padding after it: the
    /// embeddings are the same for a fraction of the work (a label's prompt, "a photo of a
    /// cat.", is 8 of the 77 tokens; the page's label edit ran the tower over all 77).
    pub fn trimmed(self) -> Self {
        let keep = self.eot_positions.iter().max().map_or(self.len, |&p| p + 1);
        if keep == self.len {
            return self;
        }
        let ids = self.ids.chunks_exact(self.len).flat_map(|row| row[..keep].iter().copied()).collect();
        Self { ids, len: keep, ..self }
    }
}

impl TextTower {
    pub fn new(c: &SegClipConfig, device: &Device) -> Self {
        let w = c.text_width;
        Self {
            token_embedding: EmbeddingConfig::new(c.vocab_size, w)
                .with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 })
                .init(device),
            positional_embedding: random_param([c.context_length, w], Distribution::Normal(0.0, 0.01), device),
            blocks: blocks(c.text_layers, w, c.text_heads, c.mlp_ratio, device),
            ln_final: layer_norm(w, device),
            text_projection: random_param([w, c.embed_dim], Distribution::Normal(0.0, (w as f64).powf(-0.5)), device),
        }
    }

    /// Text embeddings [T, E] (not normalised).
    pub fn forward(&self, tokens: &TokenBatch, device: &Device) -> Tensor<2> {
        let (t, n) = (tokens.rows, tokens.len);
        let context = self.positional_embedding.dims()[0];
        assert!(n <= context, "token sequences of length {n} exceed the text context {context}");
        // The token table's rows for these ids: the embedding lookup, done as a row select so a
        // table kept as int8 is dequantised for those rows only (a lookup dequantises all of it).
        let table = self.token_embedding.weight.val();
        let w = table.dims()[1];
        let mut x = table_rows(table, &tokens.ids).reshape([t, n, w])
            + self.positional_embedding.val().narrow(0, 0, n).unsqueeze::<3>();
        let mask = causal_mask(n, device);
        for block in &self.blocks {
            x = block.forward(x, Some(mask.clone()));
        }
        let x = self.ln_final.forward(x);
        let w = x.dims()[2];
        let rows: Vec<i64> = tokens.eot_positions.iter().enumerate().map(|(i, &p)| (i * n + p) as i64).collect();
        let at_eot = x.reshape([t * n, w]).select(0, Tensor::<1, Int>::from_data(TensorData::new(rows, [t]), device));
        at_eot.matmul(dequantized(self.text_projection.val()))
    }
}

/// Additive causal mask [n, n]: 0 on and below the diagonal, a large negative above. (A finite
/// value rather than -inf: it underflows to exactly 0 after softmax and stays safe in WGSL.)
pub fn causal_mask(n: usize, device: &Device) -> Tensor<2> {
    let values: Vec<f32> = (0..n * n).map(|i| if i % n > i / n { -1e9 } else { 0.0 }).collect();
    Tensor::from_data(TensorData::new(values, [n, n]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(ids: &[i64], context: usize) -> Vec<i64> {
        let mut row = ids.to_vec();
        row.resize(context, 0);
        row
    }

    #[test]
    fn trimming_after_the_last_eot_keeps_every_embedding() {
        let c = SegClipConfig::tiny();
        let device = Device::default();
        let tower = TextTower::new(&c, &device);
        // EOT is the largest id (999 here); rows end at positions 3 and 5 of 16.
        let rows = vec![padded(&[998, 17, 42, 999], c.context_length), padded(&[998, 5, 6, 7, 8, 999], c.context_length)];
        let full = TokenBatch::new(&rows).unwrap();
        let trimmed = full.clone().trimmed();
        assert_eq!((trimmed.len, trimmed.rows), (6, 2));
        assert_eq!(trimmed.eot_positions, vec![3, 5]);
        assert_eq!(&trimmed.ids[6..], &[998, 5, 6, 7, 8, 999]);
        let a = tower.forward(&full, &device).into_data().try_to_vec::<f32>().unwrap();
        let b = tower.forward(&trimmed, &device).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "trimmed embeddings differ by {worst}");
        // Padding after the EOT changes nothing; a token before it does.
        let mut other = rows.clone();
        other[0][2] = 43;
        let c2 = tower.forward(&TokenBatch::new(&other).unwrap().trimmed(), &device).into_data().try_to_vec::<f32>().unwrap();
        assert!(c2.iter().zip(&b).take(c.embed_dim).any(|(x, y)| (x - y).abs() > 1e-4));
    }
}
