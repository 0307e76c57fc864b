use super::*;

fn words_of(caption: &str) -> String {
    let cleaned: String = caption.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { ' ' }).collect();
    format!(" {} ", cleaned.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn mentions(caption: &str, class: u8) -> bool {
    let w = words_of(caption);
    class_words(class).iter().any(|(one, many)| w.contains(&format!(" {one} ")) || w.contains(&format!(" {many} ")))
}

#[test]
fn bundled_atlas_matches_its_index() {
    let atlas = Atlas::bundled();
    assert_eq!(atlas.cell, 64);
    for style in TRAIN_STYLES.into_iter().chain(["openmoji"]) {
        assert!(atlas.style_names().contains(&style), "{style}");
    }
    // Every class has a glyph in every style (from_bytes refuses otherwise), and glyphs are opaque somewhere.
    assert!(atlas.glyphs.iter().all(|g| g.coverage > 0.05), "an almost empty glyph");
    // One changed byte in the PNG is refused by its hash.
    let mut png = atlas::BUNDLED_PNG.to_vec();
    let last = png.len() - 20;
    png[last] ^= 1;
    let e = Atlas::from_bytes(&png, atlas::BUNDLED_JSON).unwrap_err().to_string();
    assert!(e.contains("SHA-256"), "{e}");
    let e = Atlas::from_bytes(atlas::BUNDLED_PNG, &atlas::BUNDLED_JSON.replace("\"tv monitor\"", "\"television set\"")).unwrap_err().to_string();
    assert!(e.contains("television set"), "{e}");
}

#[test]
fn scenes_are_deterministic_and_differ() {
    let cfg = EmojiConfig::default();
    for split in [Split::Train, Split::Val] {
        assert_eq!(generate(split, 7, &cfg), generate(split, 7, &cfg));
        assert_ne!(generate(split, 7, &cfg).image, generate(split, 8, &cfg).image);
    }
    assert_ne!(generate(Split::Train, 3, &cfg).image, generate(Split::Val, 3, &cfg).image);
}

/// If this changes, every emoji dataset changes: update it only on purpose. The page test checks
/// that the wasm build draws the same scenes (it reports this digest).
#[test]
fn golden_digest() {
    let h = dataset_digest(Split::Val, 0..4, &EmojiConfig::default());
    assert_eq!(h, GOLDEN_DIGEST, "emoji generator output changed: {h:#x}");
}

pub const GOLDEN_DIGEST: u64 = 0x03d5_13e2_8b7d_73aa;

#[test]
fn masks_are_exact_and_objects_visible() {
    let cfg = EmojiConfig::default();
    let atlas = Atlas::bundled();
    let mut counts = [0usize; 9];
    for index in 0..60 {
        let s = generate(Split::Train, index, &cfg);
        assert!((cfg.min_objects..=cfg.max_objects).contains(&s.objects.len()), "scene {index}: {} objects", s.objects.len());
        counts[s.objects.len()] += 1;
        for o in &s.objects {
            let labelled = s.instance_map.iter().zip(&s.class_map).filter(|&(&i, &c)| i == o.instance && c == o.class).count();
            let owned = s.instance_map.iter().filter(|&&i| i == o.instance).count();
            assert_eq!(labelled, owned, "scene {index}: object {} has pixels of another class", o.instance);
            assert_eq!(owned as u32, o.visible_pixels);
            let need = cfg.min_visible_pixels.max((cfg.min_visible_fraction * o.full_pixels as f32).ceil() as u32);
            assert!(o.visible_pixels >= need, "scene {index}: object {} shows {} of {}", o.instance, o.visible_pixels, o.full_pixels);
            assert!(TRAIN_STYLES.contains(&o.style.as_str()));
            assert!(atlas.glyphs.iter().any(|g| g.codepoint == o.codepoint && g.class == o.class));
        }
        // Background pixels are class 0 and no object's; object pixels are some object's.
        assert!(s.instance_map.iter().zip(&s.class_map).all(|(&i, &c)| (i == 0) == (c == 0)));
    }
    assert!(counts[1] > 0 && counts[4] > 0, "object counts {counts:?}");
}

#[test]
fn a_glyph_drawn_alone_is_masked_where_it_is_opaque() {
    // One object, no occlusion: re-sampling its glyph from the atlas at every pixel, with the
    // placement the scene records, gives alpha >= 1/2 exactly on the mask.
    let cfg = EmojiConfig { min_objects: 1, max_objects: 1, ..EmojiConfig::default() };
    let atlas = Atlas::bundled();
    for index in 0..10 {
        let s = generate(Split::Val, index, &cfg);
        let o = &s.objects[0];
        assert_eq!(o.visible_pixels, o.full_pixels, "a lone object is fully visible");
        let glyph = atlas.glyphs.iter().position(|g| g.codepoint == o.codepoint && g.style == o.style).unwrap();
        let (sin, cos) = sin_cos(o.rotation as f64);
        let p = Placed {
            glyph,
            class: o.class,
            cx: o.center.0,
            cy: o.center.1,
            side: o.side,
            rotation: o.rotation,
            cos: cos as f32,
            sin: sin as f32,
            flipped: o.flipped,
            saturation: 1.0,
            brightness: 1.0,
            full: 0,
            threshold: 0,
        };
        for y in 0..s.height {
            for x in 0..s.width {
                let opaque = p.sample(atlas, x, y)[3] >= 0.5;
                let labelled = s.instance_map[y * s.width + x] == o.instance;
                assert_eq!(opaque, labelled, "scene {index}: pixel ({x}, {y})");
            }
        }
        assert!(o.full_pixels > 100, "scene {index}: {} pixels", o.full_pixels);
    }
}

#[test]
fn captions_are_true() {
    let cfg = EmojiConfig::default();
    for index in 0..80 {
        let s = generate(Split::Train, index, &cfg);
        assert!(s.captions.len() >= 3, "scene {index}: {:?}", s.captions);
        let present: Vec<u8> = s.objects.iter().map(|o| o.class).collect();
        for c in &s.captions {
            for class in 1..CLASSES.len() as u8 {
                let named = mentions(c, class);
                // "plant" is a word of potted plant only; no class's words contain another's.
                assert_eq!(named, present.contains(&class), "scene {index}: '{c}' and class {}", CLASSES[class as usize]);
            }
            if c.contains("background") || c.contains("backdrop") {
                assert!(s.background.adjectives().iter().any(|a| c.contains(a)), "scene {index}: '{c}' vs {:?}", s.background);
            }
        }
        // The first caption counts exactly, with VOC names.
        for class in 1..CLASSES.len() as u8 {
            let n = present.iter().filter(|&&c| c == class).count();
            if n > 1 {
                let (_, many) = class_words(class)[0];
                assert!(s.captions[0].contains(&format!("{} {many}", captions::NUMBER_WORDS[n])), "scene {index}: {}", s.captions[0]);
            }
        }
    }
}

#[test]
fn caption_nouns_are_the_scene_classes() {
    assert_eq!(
        classes_in_caption("Two kitties, a potted plant and a TV on a plain backdrop."),
        vec![(8, "kitty"), (15, "potted plant"), (19, "tv")]
    );
    assert_eq!(classes_in_caption("a plant and another plant"), vec![(15, "plant")]);
    assert!(classes_in_caption("a striped background").is_empty());
    assert_eq!(background_in_caption("Two kitties on a Stripy backdrop."), Some(("striped", "stripy backdrop".to_string())));
    assert_eq!(background_in_caption("a cat, and the rest is a smooth background."), Some(("gradient", "smooth background".to_string())));
    assert_eq!(background_in_caption("a photo of a cat."), None);
    assert!(background_prompts().contains(&"checkered background".to_string()));
    let cfg = EmojiConfig::default();
    for index in 0..80 {
        let s = generate(Split::Train, index, &cfg);
        let mut present: Vec<u8> = s.objects.iter().map(|o| o.class).collect();
        present.sort();
        present.dedup();
        for c in &s.captions {
            // A described background is the scene's.
            if let Some((key, _)) = background_in_caption(c) {
                assert_eq!(key, s.background.adjectives()[0], "scene {index}: '{c}'");
            }
            let mut named: Vec<u8> = classes_in_caption(c).into_iter().map(|(class, _)| class).collect();
            named.sort();
            assert_eq!(named, present, "scene {index}: '{c}'");
        }
    }
}

#[test]
fn other_styles_and_bad_configs() {
    let atlas = Atlas::bundled();
    // One style alone draws only its glyphs (each of the atlas's, as `segclip synth --style`).
    for style in atlas.style_names() {
        let cfg = EmojiConfig { styles: vec![style.to_string()], ..EmojiConfig::default() };
        for index in 0..4 {
            let s = generate(Split::Val, index, &cfg);
            assert!(s.objects.iter().all(|o| o.style == style), "{style}: {:?}", s.objects);
        }
    }
    let bad = EmojiConfig { styles: vec!["comic".into()], ..EmojiConfig::default() };
    let e = bad.validate(atlas).unwrap_err().to_string();
    assert!(e.contains("comic") && e.contains("google"), "{e}");
    let bad = EmojiConfig { min_objects: 3, max_objects: 2, ..EmojiConfig::default() };
    assert!(bad.validate(atlas).unwrap_err().to_string().contains("3..=2"));
}
