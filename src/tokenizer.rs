//! The CLIP BPE tokenizer through the `tokenizers` crate, so the page and the CLI tokenize the same
//! way. `static/tokenizer.json` is built by `scripts/make-fixtures` from the vocabulary in the
//! open-clip-torch wheel; this module adds what that JSON cannot express: HTML unescaping (twice,
//! as open_clip's `basic_clean`), whitespace collapsing, the start/end tokens, padding with 0 and
//! truncation that keeps the end token last.

use tokenizers::Tokenizer;

pub const SOT: i64 = 49406;
pub const EOT: i64 = 49407;
pub const PAD: i64 = 0;

pub struct ClipTokenizer {
    inner: Tokenizer,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer.json could not be read: {0}")]
    Load(String),
    #[error("could not tokenize {text:?}: {message}")]
    Encode { text: String, message: String },
}

impl ClipTokenizer {
    /// Loads a `tokenizer.json` (bytes: works the same natively and in wasm).
    pub fn from_bytes(json: &[u8]) -> Result<Self, TokenizerError> {
        let inner = Tokenizer::from_bytes(json).map_err(|e| TokenizerError::Load(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Number of ids the tokenizer can produce (49408 for CLIP's vocabulary).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// open_clip's text cleaning, minus ftfy (not available in Rust; the JSON's NFC normaliser
    /// covers the common cases): HTML-unescape twice, collapse whitespace, trim, lowercase.
    /// Lowercasing here rather than only in the JSON gets Greek word-final sigma right (Rust's
    /// `to_lowercase` applies the final-sigma rule, as Python's `str.lower` does).
    pub fn clean(text: &str) -> String {
        let once = htmlize::unescape(text);
        let twice = htmlize::unescape(once.as_ref());
        twice.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
    }

    /// The BPE ids of `text` without start/end tokens.
    pub fn bpe_ids(&self, text: &str) -> Result<Vec<i64>, TokenizerError> {
        let cleaned = Self::clean(text);
        let encoding = self
            .inner
            .encode(cleaned.as_str(), false)
            .map_err(|e| TokenizerError::Encode { text: text.to_string(), message: e.to_string() })?;
        Ok(encoding.get_ids().iter().map(|&id| id as i64).collect())
    }

    /// `[SOT] + bpe + [EOT]`, truncated to `context` with EOT kept last, padded with 0.
    /// Returns the ids and whether the text was truncated.
    pub fn encode(&self, text: &str, context: usize) -> Result<(Vec<i64>, bool), TokenizerError> {
        let bpe = self.bpe_ids(text)?;
        let mut ids = Vec::with_capacity(context);
        ids.push(SOT);
        ids.extend(bpe);
        ids.push(EOT);
        let truncated = ids.len() > context;
        if truncated {
            ids.truncate(context);
            ids[context - 1] = EOT;
        }
        ids.resize(context, PAD);
        Ok((ids, truncated))
    }
}
