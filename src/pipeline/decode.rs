//! Image decoding for both front ends, refusing oversized images from their header before any
//! pixel is decoded (a decompression bomb never gets to allocate), and turning photos upright by
//! their EXIF orientation.

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use std::io::Cursor;

use super::preprocess::Rgb;

/// Default pixel limit: 64 megapixels (an 8k x 8k photo).
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not an image in a format segclip reads (PNG, JPEG, WebP, BMP, GIF)")]
    UnknownFormat,
    /// A format the `image` crate knows but this build does not read (TIFF, AVIF, ...).
    #[error("{0} images are not read by segclip: convert it to PNG, JPEG, WebP, BMP or GIF")]
    Unsupported(String),
    #[error("image is {width}x{height} = {pixels} pixels, above the limit of {limit} pixels")]
    TooLarge { width: u32, height: u32, pixels: u64, limit: u64 },
    #[error("image could not be decoded (truncated or corrupt?): {0}")]
    Corrupt(String),
}

/// Decodes `bytes` to RGB, refusing images of more than `max_pixels` before decoding them.
pub fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<Rgb, DecodeError> {
    decode_image_within(bytes, max_pixels, None).map(|(rgb, _)| rgb)
}

/// `decode_image`, and with `long_side` an image whose long side is larger is scaled down to it
/// straight from the decoder's buffer (the page: a 40-megapixel photo becomes 2048 px without a
/// full-size RGB or float copy). Returns the image and its size as stored, upright.
pub fn decode_image_within(bytes: &[u8], max_pixels: u64, long_side: Option<u32>) -> Result<(Rgb, (u32, u32)), DecodeError> {
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    match reader.format() {
        None => return Err(DecodeError::UnknownFormat),
        Some(format) if !format.reading_enabled() => return Err(DecodeError::Unsupported(format!("{format:?}").to_uppercase())),
        Some(_) => {}
    }
    let (width, height) = reader.into_dimensions().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(DecodeError::TooLarge { width, height, pixels, limit: max_pixels });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // Decoded RGBA at most, plus the decoder's own working memory.
    limits.max_alloc = Some(pixels * 8 + (64 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    // Phone photos are stored as the sensor saw them, with an EXIF orientation saying how to
    // show them: turned as every viewer turns them, so masks and overlays match what people see.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut decoded = DynamicImage::from_decoder(decoder).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    decoded.apply_orientation(orientation);
    let original = (decoded.width(), decoded.height());
    if let Some(cap) = long_side.filter(|&cap| cap > 0 && original.0.max(original.1) > cap) {
        let s = cap as f64 / original.0.max(original.1) as f64;
        let (w, h) = (((original.0 as f64 * s) as u32).max(1), ((original.1 as f64 * s) as u32).max(1));
        decoded = decoded.resize_exact(w, h, image::imageops::FilterType::Triangle);
    }
    let rgb = decoded.to_rgb8();
    let (w, h) = rgb.dimensions();
    let rgb = Rgb::new(w as usize, h as usize, rgb.into_raw()).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    Ok((rgb, original))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_image_is_scaled_down_on_decode_and_a_small_one_kept() {
        let bytes = png(300, 120);
        let (rgb, original) = decode_image_within(&bytes, DEFAULT_MAX_PIXELS, Some(100)).unwrap();
        assert_eq!(((rgb.width, rgb.height), original), ((100, 40), (300, 120)));
        let (rgb, _) = decode_image_within(&bytes, DEFAULT_MAX_PIXELS, Some(400)).unwrap();
        assert_eq!((rgb.width, rgb.height), (300, 120));
        assert_eq!(rgb.pixels, decode_image(&bytes, DEFAULT_MAX_PIXELS).unwrap().pixels);
    }

    #[test]
    fn a_format_this_build_does_not_read_is_named() {
        // A little-endian TIFF header: the crate knows the format, this build does not read it.
        let e = decode_image(b"II*\x00\x08\x00\x00\x00rest", DEFAULT_MAX_PIXELS).unwrap_err().to_string();
        assert!(e.starts_with("TIFF images are not read by segclip"), "{e}");
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn decodes_a_png() {
        let rgb = decode_image(&png(5, 3), DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!((rgb.width, rgb.height), (5, 3));
        assert_eq!(&rgb.pixels[3..6], &[1, 0, 7]);
    }

    #[test]
    fn refuses_non_images_truncated_files_and_oversized_headers() {
        assert!(matches!(decode_image(b"hello, not an image", 100), Err(DecodeError::UnknownFormat)));
        let full = png(64, 64);
        assert!(matches!(decode_image(&full[..full.len() / 2], DEFAULT_MAX_PIXELS), Err(DecodeError::Corrupt(_))));
        let err = decode_image(&full, 1000).unwrap_err().to_string();
        assert!(err.contains("64x64") && err.contains("1000"), "{err}");
    }

    /// A JPEG of a 16x8 image, left half red and right half blue, with an EXIF APP1 segment
    /// saying orientation `tag` (6: shown turned 90 degrees clockwise, as a phone held upright
    /// stores its photos).
    fn jpeg_with_orientation(tag: u16) -> Vec<u8> {
        let img = image::RgbImage::from_fn(16, 8, |x, _| if x < 8 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) });
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
        // TIFF header (big-endian), one IFD entry: tag 0x0112 (Orientation), SHORT, count 1.
        let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
        exif.extend_from_slice(&tag.to_be_bytes());
        exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut app1 = vec![0xff, 0xe1];
        app1.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
        app1.extend_from_slice(&exif);
        // Right after the start-of-image marker.
        jpeg.splice(2..2, app1);
        jpeg
    }

    #[test]
    fn a_phone_photo_is_turned_upright_by_its_exif_orientation() {
        let plain = decode_image(&jpeg_with_orientation(1), DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!((plain.width, plain.height), (16, 8));
        let upright = decode_image(&jpeg_with_orientation(6), DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!((upright.width, upright.height), (8, 16), "turned a quarter");
        // Turned clockwise: the stored left half (red) is now the top half.
        let at = |x: usize, y: usize| &upright.pixels[(y * 8 + x) * 3..(y * 8 + x) * 3 + 3];
        assert!(at(4, 2)[0] > 200 && at(4, 2)[2] < 60, "top is red: {:?}", at(4, 2));
        assert!(at(4, 13)[2] > 200 && at(4, 13)[0] < 60, "bottom is blue: {:?}", at(4, 13));
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        // A PNG header claiming 100000 x 100000 pixels, with almost no data behind it.
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        // Fix the IHDR checksum so the header itself is valid.
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode_image(&bomb, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { width: 100_000, height: 100_000, .. }), "{err}");
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}
