//! The CLIP tokenizer against open_clip's own on the committed cases
//! (tests/fixtures/tokenizer_cases.json, written by `scripts/make-fixtures`).

use std::path::Path;

use segclip::tokenizer::{ClipTokenizer, EOT, SOT};

fn tokenizer() -> ClipTokenizer {
    let json = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("static/tokenizer.json")).unwrap();
    ClipTokenizer::from_bytes(&json).unwrap()
}

#[test]
fn matches_open_clip_on_every_committed_case() {
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_cases.json")).unwrap(),
    )
    .unwrap();
    let context = cases["context_length"].as_u64().unwrap() as usize;
    let tok = tokenizer();
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in cases["cases"].as_array().unwrap() {
        if case["ftfy_sensitive"].as_bool() == Some(true) {
            continue;
        }
        let text = case["text"].as_str().unwrap();
        let want: Vec<i64> = case["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let (got, _) = tok.encode(text, context).unwrap();
        checked += 1;
        if got != want {
            failures.push(format!("{text:?}\n  got  {got:?}\n  want {want:?}"));
        }
    }
    assert!(checked >= 300, "only {checked} cases checked");
    assert!(failures.is_empty(), "{} of {checked} cases differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn truncation_keeps_the_end_token_last() {
    let tok = tokenizer();
    let long = "a very long label ".repeat(40);
    let (ids, truncated) = tok.encode(&long, 77).unwrap();
    assert!(truncated);
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], SOT);
    assert_eq!(ids[76], EOT);
}

#[test]
fn empty_text_is_start_and_end_then_padding() {
    let (ids, truncated) = tokenizer().encode("", 8).unwrap();
    assert!(!truncated);
    assert_eq!(ids, vec![SOT, EOT, 0, 0, 0, 0, 0, 0]);
}
