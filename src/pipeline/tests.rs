//! The pipeline end to end on a tiny model: residencies, the label cache, two-step combination,
//! scales, limits.
use super::*;

/// A freshly initialised model of the test size with the CLIP tokenizer's vocabulary and no
/// background threshold, a 48x40 image of varied pixels, and three labels.
fn tiny_segmenter() -> (Segmenter, Rgb, Vec<String>) {
    let config = SegClipConfig { vocab_size: 49408, ..SegClipConfig::tiny() };
    let device = Device::default();
    let tokenizer = ClipTokenizer::from_bytes(include_bytes!("../../static/tokenizer.json")).unwrap();
    let mut s = Segmenter::new(SegClip::new(&config, &device), config, tokenizer, device).unwrap();
    s.protocol.bg_thresh = 0.0;
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
            s.protocol.bg_thresh = 0.0;
            s.protocol.templates = vec!["a photo of a {}.".into(), "{}".into()];
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
    s.protocol.background_prompts = vec!["wall".into(), "sky".into(), "Window".into()];
    // A dense model's words yield to typed labels; SegCLIP keeps the prompts it was trained on.
    let typed: Vec<String> = vec!["WALL".into(), "cat".into(), " window".into()];
    assert_eq!(s.protocol.background_words(Kind::Dense, &typed), vec!["sky".to_string()]);
    assert_eq!(s.background_words(&typed), s.protocol.background_prompts);
    let labels: Vec<String> = vec!["cat".into()];
    let first = block_on(s.encode_labels(&labels)).unwrap();
    let stored = s.cached_label_embeddings();
    assert_eq!(stored, vec![("cat".to_string(), first[0].clone())]);
    s.clear_label_cache();
    s.add_label_embeddings(stored).unwrap();
    let prompts = s.counters.prompts_encoded;
    assert_eq!(block_on(s.encode_labels(&labels)).unwrap(), first);
    assert_eq!(s.counters.prompts_encoded, prompts, "a stored embedding went through the text tower again");
    let e = s.add_label_embeddings(vec![("dog".into(), vec![0.0; 3])]).unwrap_err().to_string();
    assert!(e.contains("\"dog\"") && e.contains("3 values"), "{e}");
}

#[test]
fn labels_encoded_together_equal_labels_encoded_alone() {
    // Templates of different lengths, so the prompts are reordered by length across labels.
    let (mut s, _, labels) = tiny_segmenter();
    s.protocol.templates = vec!["{}".into(), "a very blurry and dark photo of the small {}.".into(), "a {}.".into()];
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
    s.protocol.refine = Some(refine::RefineParams { iterations: 3 });
    let embeddings = block_on(s.encode_labels(&labels)).unwrap();
    let features = block_on(s.encode_image(&image)).unwrap();
    let whole = block_on(s.combine(&features, &labels, &embeddings)).unwrap();
    let (preview, map) = block_on(s.combine_unrefined(&features, &labels, &embeddings)).unwrap().expect("a refinement applies");
    let refined = s.refine_combined(&features, &labels, map);
    assert_eq!((&refined.label_map, &refined.scores), (&whole.label_map, &whole.scores));
    s.protocol.refine = None;
    let plain = block_on(s.combine(&features, &labels, &embeddings)).unwrap();
    assert_eq!((&preview.label_map, &preview.scores), (&plain.label_map, &plain.scores));
    assert_ne!(plain.scores, whole.scores, "the refinement changed nothing: the check above proves little");
    assert!(block_on(s.combine_unrefined(&features, &labels, &embeddings)).unwrap().is_none());
}

#[test]
fn more_scales_are_encoded_in_two_steps_or_one_and_change_the_map() {
    let (mut s, image, labels) = tiny_segmenter();
    s.protocol.flip = true;
    let embeddings = block_on(s.encode_labels(&labels)).unwrap();
    let one_scale = block_on(s.encode_image(&image)).unwrap();
    assert!(one_scale.extra_scales.is_empty());
    let plain = block_on(s.combine(&one_scale, &labels, &embeddings)).unwrap();

    let size = s.config.image_size;
    s.protocol.extra_short_sides = vec![size + 8, size * 2];
    let windows_before = s.counters.windows_encoded;
    let whole = block_on(s.encode_image(&image)).unwrap();
    // Every scale's windows, mirrored too, each scale at its own size.
    let per_scale: Vec<usize> = whole.extra_scales.iter().map(|e| e.windows.len()).collect();
    assert_eq!(whole.extra_scales.iter().map(|e| e.resized).collect::<Vec<_>>(), vec![(48, 40), (77, 64)]);
    assert!(whole.extra_scales.iter().all(|e| e.mirrored.as_ref().map(|m| m.len()) == Some(e.windows.len())));
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

    s.protocol.extra_short_sides = Vec::new();
    // A stride of one pixel over a 400x300 image: refused before any window is encoded.
    (s.protocol.stride, s.protocol.short_side) = (1, 300);
    let big = Rgb::new(400, 300, vec![9; 400 * 300 * 3]).unwrap();
    let before = s.counters.windows_encoded;
    let e = block_on(s.encode_image(&big)).unwrap_err().to_string();
    assert!(e.starts_with("--stride: ") && e.contains("at most 4096"), "{e}");
    assert_eq!(s.counters.windows_encoded, before);
    (s.protocol.stride, s.protocol.short_side) = (0, 0);
    s.protocol.extra_short_sides = vec![size - 1];
    let e = block_on(s.encode_image(&image)).unwrap_err().to_string();
    assert_eq!(e, format!("--extra-short-sides: {} is below the window side {size} px", size - 1));
}
