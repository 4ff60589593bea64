//! EXIF orientation, applied only when asked (`--exif`): the reference hashes the stored pixels, but an
//! operator who wants hashes of the image *as displayed* can opt in. Transforms follow Pillow's
//! `ImageOps.exif_transpose`, so the result matches the corpus' `pdq_hex_exif` column.

use super::{Decoded, Format, PixelData};
use std::io::Cursor;

/// The orientation tag (2..=8) if present and not the identity; `None` for formats without EXIF.
pub(super) fn orientation(bytes: &[u8], format: Format) -> Option<u32> {
    if matches!(format, Format::Gif | Format::Bmp) {
        return None;
    }
    let exif = ::exif::Reader::new().read_from_container(&mut Cursor::new(bytes)).ok()?;
    let field = exif.get_field(::exif::Tag::Orientation, ::exif::In::PRIMARY)?;
    match field.value.get_uint(0) {
        Some(o @ 2..=8) => Some(o),
        _ => None,
    }
}

/// Applies orientation `o` (2..=8). For output pixel (r, c) of the transformed image, the source pixel is
/// given by `src`; rotations by 90° swap width and height.
pub(super) fn apply(img: Decoded, o: u32) -> Decoded {
    let (w, h) = (img.width as usize, img.height as usize);
    let swaps = matches!(o, 5..=8);
    let (ow, oh) = if swaps { (h, w) } else { (w, h) };
    // Pillow: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE, 6 ROTATE_270 (clockwise),
    // 7 TRANSVERSE, 8 ROTATE_90 (counter-clockwise).
    let src = |r: usize, c: usize| -> (usize, usize) {
        match o {
            2 => (r, w - 1 - c),
            3 => (h - 1 - r, w - 1 - c),
            4 => (h - 1 - r, c),
            5 => (c, r),
            6 => (h - 1 - c, r),
            7 => (h - 1 - c, w - 1 - r),
            8 => (c, w - 1 - r),
            _ => (r, c),
        }
    };
    fn remap<const K: usize>(
        data: &[u8],
        w: usize,
        ow: usize,
        oh: usize,
        src: impl Fn(usize, usize) -> (usize, usize),
    ) -> Vec<u8> {
        let mut out = vec![0u8; data.len()];
        for r in 0..oh {
            for c in 0..ow {
                let (sr, sc) = src(r, c);
                let (d, s) = ((r * ow + c) * K, (sr * w + sc) * K);
                out[d..d + K].copy_from_slice(&data[s..s + K]);
            }
        }
        out
    }
    let data = match &img.data {
        PixelData::Rgb(v) => PixelData::Rgb(remap::<3>(v, w, ow, oh, src)),
        PixelData::Gray(v) => PixelData::Gray(remap::<1>(v, w, ow, oh, src)),
    };
    Decoded { width: ow as u32, height: oh as u32, format: img.format, data }
}
