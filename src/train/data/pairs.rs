//! Image-caption pairs from files: a JSONL list or a COCO captions file.

use std::path::{Path, PathBuf};

use crate::train::error::TrainError;

/// Reads `{"image": path, "caption": text}` lines; relative paths are relative to the file.
pub fn read_jsonl(path: &Path) -> Result<Vec<(PathBuf, String)>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(TrainError::io(path))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| TrainError::PairsLine { path: path.to_path_buf(), line: i + 1, message };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let image = v.get("image").and_then(|x| x.as_str()).ok_or_else(|| bad("no string field \"image\"".into()))?;
        let caption = v.get("caption").and_then(|x| x.as_str()).ok_or_else(|| bad("no string field \"caption\"".into()))?;
        out.push((base.join(image), caption.to_string()));
    }
    if out.is_empty() {
        return Err(TrainError::Pairs { path: path.to_path_buf(), message: "no samples".into() });
    }
    check_images_exist(&out)?;
    Ok(out)
}

/// Reads a COCO captions file (`images[].{id, file_name}`, `annotations[].{image_id, caption}`);
/// every caption is its own sample, as in the reference.
pub fn read_coco(path: &Path, images: &Path) -> Result<Vec<(PathBuf, String)>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(TrainError::io(path))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| TrainError::Json { path: path.to_path_buf(), source })?;
    let bad = |message: String| TrainError::Pairs { path: path.to_path_buf(), message };
    let list = |field: &str| v.get(field).and_then(|x| x.as_array()).ok_or_else(|| bad(format!("no array \"{field}\" (not a COCO captions file?)")));
    let mut files = std::collections::HashMap::new();
    for (i, im) in list("images")?.iter().enumerate() {
        let id = im.get("id").and_then(|x| x.as_u64()).ok_or_else(|| bad(format!("images[{i}] has no integer \"id\"")))?;
        let name =
            im.get("file_name").and_then(|x| x.as_str()).ok_or_else(|| bad(format!("images[{i}] has no \"file_name\"")))?;
        files.insert(id, images.join(name));
    }
    let mut out = Vec::new();
    for (i, a) in list("annotations")?.iter().enumerate() {
        let id = a
            .get("image_id")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| bad(format!("annotations[{i}] has no integer \"image_id\"")))?;
        let caption =
            a.get("caption").and_then(|x| x.as_str()).ok_or_else(|| bad(format!("annotations[{i}] has no \"caption\"")))?;
        let file =
            files.get(&id).ok_or_else(|| bad(format!("annotations[{i}] names image {id}, which \"images\" lacks")))?;
        out.push((file.clone(), caption.trim().to_string()));
    }
    if out.is_empty() {
        return Err(bad("no captions".into()));
    }
    check_images_exist(&out)?;
    Ok(out)
}

fn check_images_exist(pairs: &[(PathBuf, String)]) -> Result<(), TrainError> {
    let missing: Vec<String> = pairs.iter().filter(|(p, _)| !p.is_file()).map(|(p, _)| p.display().to_string()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut unique = missing;
    unique.sort();
    unique.dedup();
    Err(TrainError::MissingImages { count: unique.len(), examples: unique[..unique.len().min(3)].join(", ") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    #[test]
    fn jsonl_and_coco_errors_name_the_problem() {
        let dir = std::env::temp_dir().join(format!("segclip-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("a.png");
        RgbImage::new(8, 8).save(&img).unwrap();
        let jsonl = dir.join("pairs.jsonl");
        std::fs::write(&jsonl, "{\"image\": \"a.png\", \"caption\": \"a cat\"}\n{\"image\": \"a.png\"}\n").unwrap();
        let e = read_jsonl(&jsonl).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("caption"), "{e}");
        std::fs::write(&jsonl, "{\"image\": \"a.png\", \"caption\": \"a cat\"}\n{\"image\": \"b.png\", \"caption\": \"x\"}\n").unwrap();
        let e = read_jsonl(&jsonl).unwrap_err().to_string();
        assert!(e.contains("b.png") && e.contains("missing"), "{e}");
        std::fs::write(&jsonl, "{\"image\": \"a.png\", \"caption\": \"a cat\"}\n").unwrap();
        assert_eq!(read_jsonl(&jsonl).unwrap(), vec![(dir.join("a.png"), "a cat".to_string())]);

        let coco = dir.join("captions.json");
        std::fs::write(&coco, r#"{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "caption": " a cat "}, {"image_id": 1, "caption": "two"}]}"#).unwrap();
        assert_eq!(read_coco(&coco, &dir).unwrap().len(), 2);
        std::fs::write(&coco, r#"{"images": [], "annotations": [{"image_id": 5, "caption": "x"}]}"#).unwrap();
        let e = read_coco(&coco, &dir).unwrap_err().to_string();
        assert!(e.contains("image 5"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
