//! A local stand-in for the model hub, in its URL layout: `/{repo}/resolve/{revision}/{file}`
//! answers with a 302 redirect to another path (the hub sends LFS files to its CDN), which
//! serves the bytes with CORS headers and honours `Range`. Files can be registered to fail as a
//! hub or a network does: without CORS headers, cut short, slow, or behind a login (401); any
//! other path is a 404. Plain HTTP/1.1 over std's TcpListener, one connection per request, so
//! each behaviour is exact (a cut-short body really ends at its byte).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a registered file is served.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// No `Access-Control-Allow-Origin`: a page on another origin is refused its body.
    pub no_cors: bool,
    /// Send only this many bytes of the body (the `Content-Length` still says all of it).
    pub cut_at: Option<usize>,
    /// Pause this long after each 64 KiB (a slow connection, to cancel a download).
    pub delay_per_chunk: Option<Duration>,
    /// Answer 401 (a gated or private repository).
    pub unauthorized: bool,
    /// Redirect the resolve URL to this other base (another host) instead of this server.
    pub redirect_base: Option<String>,
}

struct File {
    bytes: Arc<Vec<u8>>,
    behaviour: Behaviour,
}

pub struct HubServer {
    pub base: String,
    files: Arc<Mutex<HashMap<String, File>>>,
    /// Every request's path, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<Mutex<bool>>,
}

impl HubServer {
    pub fn start() -> HubServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the hub server");
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let files: Arc<Mutex<HashMap<String, File>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(Mutex::new(false));
        let (f, r, s) = (files.clone(), requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if *s.lock().unwrap() {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (f, r) = (f.clone(), r.clone());
                std::thread::spawn(move || {
                    let _ = handle(stream, &f, &r);
                });
            }
        });
        HubServer { base, files, requests, stop }
    }

    /// Serves `bytes` as `{repo}/resolve/{revision}/{file}`.
    pub fn add(&self, repo: &str, revision: &str, file: &str, bytes: Vec<u8>, behaviour: Behaviour) {
        self.files.lock().unwrap().insert(format!("/{repo}/resolve/{revision}/{file}"), File { bytes: Arc::new(bytes), behaviour });
    }

    /// Stops answering: later connections are refused (the network is gone).
    pub fn stop(&self) {
        *self.stop.lock().unwrap() = true;
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn handle(stream: TcpStream, files: &Mutex<HashMap<String, File>>, requests: &Mutex<Vec<String>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().split('?').next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    requests.lock().unwrap().push(path.clone());
    let host = headers.get("host").cloned().unwrap_or_default();
    let mut out = stream;
    let cors = "Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: Content-Length, Content-Range, Accept-Ranges\r\n";
    if method == "OPTIONS" {
        return write!(out, "HTTP/1.1 204 No Content\r\n{cors}Access-Control-Allow-Headers: *\r\nConnection: close\r\n\r\n");
    }
    // The CDN path: /cdn/{resolve path}.
    let (resolve, is_cdn) = match path.strip_prefix("/cdn") {
        Some(rest) => (rest.to_string(), true),
        None => (path.clone(), false),
    };
    let files = files.lock().unwrap();
    let Some(file) = files.get(&resolve) else {
        return write!(out, "HTTP/1.1 404 Not Found\r\n{cors}Content-Length: 9\r\nConnection: close\r\n\r\nnot found");
    };
    let b = file.behaviour.clone();
    let bytes = file.bytes.clone();
    drop(files);
    let cors = if b.no_cors { "" } else { cors };
    if b.unauthorized {
        return write!(out, "HTTP/1.1 401 Unauthorized\r\n{cors}Content-Length: 12\r\nConnection: close\r\n\r\nunauthorized");
    }
    if !is_cdn {
        let target = match &b.redirect_base {
            Some(other) => format!("{other}/cdn{resolve}"),
            None => format!("http://{host}/cdn{resolve}"),
        };
        return write!(out, "HTTP/1.1 302 Found\r\n{cors}Location: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
    let (status, range, body) = match headers.get("range").and_then(|r| parse_range(r, bytes.len())) {
        Some((start, end)) => ("206 Partial Content", Some((start, end)), &bytes[start..=end]),
        None => ("200 OK", None, &bytes[..]),
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\n{cors}Content-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some((s, e)) = range {
        head.push_str(&format!("Content-Range: bytes {s}-{e}/{}\r\n", bytes.len()));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    let send = b.cut_at.map_or(body.len(), |c| c.min(body.len()));
    for chunk in body[..send].chunks(64 << 10) {
        out.write_all(chunk)?;
        if let Some(d) = b.delay_per_chunk {
            out.flush()?;
            std::thread::sleep(d);
        }
    }
    out.flush()?;
    let _ = out.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// `bytes=a-b`, `bytes=a-` -> the inclusive range within `len`.
fn parse_range(header: &str, len: usize) -> Option<(usize, usize)> {
    let spec = header.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: usize = a.trim().parse().ok()?;
    let end: usize = if b.trim().is_empty() { len.checked_sub(1)? } else { b.trim().parse::<usize>().ok()?.min(len.checked_sub(1)?) };
    (start <= end).then_some((start, end))
}

/// The parity fixture's small CLIP in a hub layout: `hf_clip_tiny.safetensors` (Hugging Face
/// `CLIPModel`, written by scripts/make-fixtures), or the same tensors under OpenAI's key names
/// as open_clip and timm publish them (from the fixture's OpenAI state dict). With
/// `clip_vocabulary`, the token table is widened to the CLIP tokenizer's 49408 rows (the rows
/// past the fixture's 320 repeat its rows), so a page can tokenize real labels for it.
pub fn tiny_hub_file(openai_layout: bool, clip_vocabulary: bool) -> Vec<u8> {
    use safetensors::tensor::{Dtype, TensorView};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity");
    let tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = if openai_layout {
        segclip::weights::import::read_checkpoint(&root.join("openai_clip_tiny.pt"))
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, Dtype::F32, t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect()
    } else {
        let bytes = std::fs::read(root.join("hf_clip_tiny.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensors().into_iter().map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect()
    };
    let tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(k, dtype, mut shape, mut data)| {
            let token_table = k == "token_embedding.weight" || k == "text_model.embeddings.token_embedding.weight";
            if clip_vocabulary && token_table {
                let row = data.len() / shape[0];
                let rows = data.len() / row;
                let mut wide = Vec::with_capacity(49408 * row);
                for r in 0..49408 {
                    wide.extend_from_slice(&data[(r % rows) * row..(r % rows + 1) * row]);
                }
                data = wide;
                shape[0] = 49408;
            }
            (k, dtype, shape, data)
        })
        .collect();
    let views = tensors.iter().map(|(k, d, s, b)| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap()));
    safetensors::serialize(views, None).unwrap()
}
