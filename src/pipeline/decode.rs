//! Image decoding for both front ends, refusing oversized images from their header before any
//! pixel is decoded (a decompression bomb never gets to allocate).

use image::{ImageReader, Limits};
use std::io::Cursor;

use super::preprocess::Rgb;

/// Default pixel limit: 64 megapixels (an 8k x 8k photo).
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not an image in a format segclip reads (PNG, JPEG, WebP, BMP, GIF)")]
    UnknownFormat,
    #[error("image is {width}x{height} = {pixels} pixels, above the limit of {limit} pixels")]
    TooLarge { width: u32, height: u32, pixels: u64, limit: u64 },
    #[error("image could not be decoded (truncated or corrupt?): {0}")]
    Corrupt(String),
}

/// Decodes `bytes` to RGB, refusing images of more than `max_pixels` before decoding them.
pub fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<Rgb, DecodeError> {
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if reader.format().is_none() {
        return Err(DecodeError::UnknownFormat);
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
    let decoded = reader.decode().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let rgb = decoded.to_rgb8();
    let (w, h) = rgb.dimensions();
    Rgb::new(w as usize, h as usize, rgb.into_raw()).map_err(DecodeError::Corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

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
