//! What can go wrong on the page, each case naming what failed: a browser call, a request, a
//! download, a weights file, the pipeline, the backend's checks. Each displays as the one line
//! the page shows (in its message line, its status object and the console), word for word.

use wasm_bindgen::JsValue;

use crate::pipeline::PipelineError;
use crate::weights::format::WeightsError;
use crate::weights::stream::ConvertError;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// A browser object the page needs is not there ("no window", "no document").
    #[error("no {0}")]
    Missing(&'static str),
    /// An element the page's HTML should have.
    #[error("the page lacks #{0}")]
    NoElement(String),
    /// A browser API refused: which call, and the browser's words (`{:?}` of its `JsValue`).
    #[error("{detail}")]
    Browser { call: &'static str, detail: String },
    /// Reading a response body or a file failed: which one, and why.
    #[error("{what}: {detail}")]
    Read { what: String, detail: String },
    /// A request that got no response.
    #[error("fetch {url}: {detail}")]
    Network { url: String, detail: String },
    /// A request the server answered with an error status.
    #[error("fetch {url}: HTTP {status}")]
    Fetch { url: String, status: u16 },
    /// A downloaded asset whose SHA-256 is not the manifest's.
    #[error("{url}: SHA-256 {found} does not match the manifest's {expected} (a damaged or partial download?)")]
    Checksum { url: String, found: String, expected: String },
    /// The browser's storage quota is full (a model or label embeddings not kept).
    #[error("the browser's storage quota is full (free some in the site settings, or Forget another model)")]
    QuotaFull,

    /// `?backend=` names no backend.
    #[error("unknown backend '{0}' in the address: use ?backend=webgpu or ?backend=cpu")]
    UnknownBackend(String),
    /// The browser offers no usable WebGPU adapter (the reason the page gives for the CPU path).
    #[error("{0}")]
    NoWebGpu(&'static str),
    /// `navigator.gpu.requestAdapter` threw or was rejected ("threw" / "failed").
    #[error("requestAdapter {outcome}: {detail}")]
    RequestAdapter { outcome: &'static str, detail: String },
    #[error("WebGPU failed to initialise: {0}")]
    WebGpuInit(String),
    /// The self-check on WebGPU could not run.
    #[error("WebGPU self-check failed: {0}")]
    WebGpuSelfCheck(Box<PageError>),
    #[error("WebGPU computed a wrong self-check result (max error {0:.2e})")]
    WebGpuWrong(f32),
    #[error("the CPU backend failed its self-check (error {0:.2e})")]
    CpuWrong(f32),
    /// Reading a result back from the device failed.
    #[error("read-back failed: {0}")]
    ReadBack(String),

    /// A model download the user can act on: the browser is offline.
    #[error("you are offline: the model cannot be downloaded now.")]
    Offline,
    #[error("{url} could not be fetched: the server is unreachable or refused a cross-origin request (CORS) ({detail}).")]
    Unreachable { url: String, detail: String },
    /// A model download the server refused.
    #[error("{}", refused(.url, .status))]
    Refused { url: String, status: u16 },
    #[error("the download broke off after {:.1} MB ({detail}).", megabytes(.received))]
    BrokeOff { received: u64, detail: String },
    /// The user pressed Cancel.
    #[error("cancelled; nothing was kept.")]
    Cancelled,
    /// The release preset without `?mirror=`: GitHub's downloads have no CORS headers.
    #[error(
        "GitHub serves this file without CORS headers, so the page cannot download it. Run \
         `segclip fetch segclip-release` and drop the file on \"Use my own weights\", or open \
         the page with ?mirror=URL."
    )]
    NeedsMirror,
    /// A downloaded checkpoint the converter refused.
    #[error("{url}: {error}")]
    Convert { url: String, #[source] error: ConvertError },

    /// A weights file that cannot be read, named as the page knows it.
    #[error("{file}: {error}")]
    Weights { file: String, #[source] error: WeightsError },
    /// A model the pipeline refused (its file, its manifest entry's settings).
    #[error("{file}: {error}")]
    Model { file: String, #[source] error: PipelineError },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    /// The page's own one-line explanation, or a library error that is still text.
    #[error("{0}")]
    Message(String),
}

impl PageError {
    /// A browser API's refusal, in the browser's words.
    pub fn browser(call: &'static str, e: JsValue) -> Self {
        PageError::Browser { call, detail: format!("{e:?}") }
    }

    /// Reading `what` (an address, a file's name) failed with the browser's `e`.
    pub fn read(what: &str, e: JsValue) -> Self {
        PageError::Read { what: what.to_string(), detail: format!("{e:?}") }
    }
}

fn refused(url: &str, status: &u16) -> String {
    match status {
        401 | 403 => format!("HTTP {status} at {url}: the repository is private or gated (it needs a login)."),
        404 => format!("HTTP 404 at {url}: no such repository, revision or file (check the preset or the mirror)."),
        _ => format!("HTTP {status} at {url}."),
    }
}

fn megabytes(bytes: &u64) -> f64 {
    *bytes as f64 / 1e6
}
