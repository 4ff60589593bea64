//! Bytes → pixels, with the reference's decode policy and limits checked before any pixel buffer exists.
//!
//! Policy (it decides which hash an image gets, so it matches what Meta's reference hashes were computed on,
//! see `PDQ_SPEC.md` §12 and the corpus README):
//! - full resolution: no 512-px pre-resize (that is only the C++ CLI's shortcut and shifts hashes);
//! - first frame of animations (GIF, APNG, animated WebP);
//! - alpha dropped, not composited: the underlying RGB is hashed;
//! - EXIF orientation ignored unless [`DecodeOptions::exif_orientation`] asks for it;
//! - grey, palette, 1/2/4-bit, 16-bit and CMYK inputs become 8-bit grey or RGB with Pillow's formulas
//!   (16-bit keeps the high byte, CMYK uses Pillow's inverted-Adobe convention).
//!
//! Decoders: JPEG goes through libjpeg-turbo (vendored, built statically) because that is the decoder behind
//! Pillow, ImageMagick, browsers and most crawlers: with the same IDCT and chroma upsampling the pixels, and
//! therefore the hashes, are bit-identical to the ones partners computed. The pure-Rust zune-jpeg was measured
//! against it (`benches/decode.rs`, figures in `BENCHMARKS.md`). Still WebP goes through libwebp, Pillow's
//! decoder, for the same reason and for speed. PNG, BMP, TIFF and animated WebP use the `image` crate's
//! pure-Rust decoders; GIF uses the `gif` crate directly so the first frame can be rebuilt from its palette
//! indices the way Pillow does.
//!
//! Never log or persist the bytes or pixels handled here.

mod exif;
mod jpeg;
mod webp;

use crate::error::{Error, Limit, Result};
use crate::pixels::{ImageView, Pixels};
use std::io::Cursor;

/// Upper bounds on what an input may declare. Checked against the header before decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded input in bytes.
    pub max_bytes: u64,
    /// Largest width in pixels.
    pub max_width: u32,
    /// Largest height in pixels.
    pub max_height: u32,
    /// Largest `width × height`.
    pub max_pixels: u64,
}

impl Default for Limits {
    /// 64 MiB encoded, 32768 px a side, 100 megapixels (300 MB as RGB): above any real photo (a 108 MP phone
    /// sensor image is the rare exception), far below what a decompression bomb asks for.
    fn default() -> Self {
        Limits { max_bytes: 64 << 20, max_width: 32768, max_height: 32768, max_pixels: 100_000_000 }
    }
}

impl Limits {
    /// Checks declared dimensions; the error names the first limit exceeded.
    pub fn check_dimensions(&self, width: u32, height: u32) -> Result<()> {
        let too_large = |what, value: u64, limit: u64| Err(Error::TooLarge { what, value, limit });
        if width > self.max_width {
            return too_large(Limit::Width, width.into(), self.max_width.into());
        }
        if height > self.max_height {
            return too_large(Limit::Height, height.into(), self.max_height.into());
        }
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_pixels {
            return too_large(Limit::Pixels, pixels, self.max_pixels);
        }
        Ok(())
    }

    fn check_bytes(&self, len: usize) -> Result<()> {
        if len as u64 > self.max_bytes {
            return Err(Error::TooLarge { what: Limit::Bytes, value: len as u64, limit: self.max_bytes });
        }
        Ok(())
    }
}

/// How to decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Limits checked before decoding.
    pub limits: Limits,
    /// Apply the EXIF orientation tag (the reference does not; `pharos hash --exif` does).
    pub exif_orientation: bool,
}

/// A container format Pharos decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// JPEG / JFIF / EXIF (baseline, progressive, grey, CMYK/YCCK).
    Jpeg,
    /// PNG (1–16 bit, grey, palette, alpha; first frame of APNG).
    Png,
    /// WebP (lossy, lossless, first frame of animations).
    WebP,
    /// GIF (first frame).
    Gif,
    /// Windows bitmap.
    Bmp,
    /// TIFF (first page).
    Tiff,
}

impl Format {
    /// Lower-case name used in messages and reports.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::WebP => "webp",
            Format::Gif => "gif",
            Format::Bmp => "bmp",
            Format::Tiff => "tiff",
        }
    }

    /// Recognises a format from its magic bytes (file names are not trusted).
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        match bytes {
            [0xFF, 0xD8, 0xFF, ..] => Some(Format::Jpeg),
            [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some(Format::Png),
            [b'G', b'I', b'F', b'8', b'7' | b'9', b'a', ..] => Some(Format::Gif),
            [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some(Format::WebP),
            [b'B', b'M', ..] => Some(Format::Bmp),
            [b'I', b'I', 42, 0, ..] | [b'M', b'M', 0, 42, ..] => Some(Format::Tiff),
            [b'I', b'I', 43, 0, ..] | [b'M', b'M', 0, 43, ..] => Some(Format::Tiff),
            _ => None,
        }
    }
}

/// Owned decoded pixels (see [`ImageView`] for the layout).
#[derive(Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The container format the bytes were in.
    pub format: Format,
    /// The samples.
    pub data: PixelData,
}

/// Owned samples of a [`Decoded`] image.
#[derive(Clone, PartialEq, Eq)]
pub enum PixelData {
    /// Interleaved 8-bit RGB.
    Rgb(Vec<u8>),
    /// 8-bit grey, one byte per pixel.
    Gray(Vec<u8>),
}

impl std::fmt::Debug for Decoded {
    // Deliberately prints no pixel data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.data {
            PixelData::Rgb(_) => "rgb",
            PixelData::Gray(_) => "gray",
        };
        write!(f, "Decoded({} {}x{} {kind})", self.format.name(), self.width, self.height)
    }
}

impl Decoded {
    /// A borrowed view for the hashers.
    pub fn view(&self) -> ImageView<'_> {
        let pixels = match &self.data {
            PixelData::Rgb(v) => Pixels::Rgb(v),
            PixelData::Gray(v) => Pixels::Gray(v),
        };
        ImageView { width: self.width, height: self.height, pixels }
    }

    /// The pixels as interleaved RGB, which is what Pillow's `convert("RGB")` returns (used to compare decoders
    /// with the corpus' `decoded_rgb_sha256`).
    pub fn to_rgb(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.data {
            PixelData::Rgb(v) => std::borrow::Cow::Borrowed(v),
            PixelData::Gray(v) => v.iter().flat_map(|&g| [g, g, g]).collect(),
        }
    }
}

/// Decodes `bytes` under `opts`. Every failure is a typed [`Error`]; nothing panics on hostile input.
pub fn decode(bytes: &[u8], opts: &DecodeOptions) -> Result<Decoded> {
    opts.limits.check_bytes(bytes.len())?;
    let format = detect(bytes)?;
    let decoded = match format {
        Format::Jpeg => jpeg::decode(bytes, &opts.limits)?,
        Format::Gif => decode_gif(bytes, &opts.limits)?,
        Format::WebP => match webp::decode(bytes, &opts.limits)? {
            Some(still) => still,
            None => decode_image_rs(bytes, format, &opts.limits)?,
        },
        _ => decode_image_rs(bytes, format, &opts.limits)?,
    };
    if opts.exif_orientation {
        if let Some(orientation) = exif::orientation(bytes, format) {
            return Ok(exif::apply(decoded, orientation));
        }
    }
    Ok(decoded)
}

fn detect(bytes: &[u8]) -> Result<Format> {
    if bytes.is_empty() {
        return Err(Error::Empty);
    }
    Format::sniff(bytes).ok_or_else(|| Error::UnsupportedFormat(describe_unknown(bytes)))
}

/// A hint for the error message when the magic bytes are not ours.
fn describe_unknown(bytes: &[u8]) -> String {
    let hint = match bytes {
        [_, _, _, _, b'f', b't', b'y', b'p', b'a', b'v', b'i', b'f', ..] => " (AVIF is not supported)",
        [_, _, _, _, b'f', b't', b'y', b'p', b'h', b'e', b'i', b'c' | b'x', ..] => " (HEIC is not supported)",
        [_, _, _, _, b'f', b't', b'y', b'p', ..] => " (ISO media / video is not supported)",
        [b'%', b'P', b'D', b'F', ..] => " (PDF is not an image)",
        [b'<', ..] => " (looks like text/HTML or SVG, not a raster image)",
        _ if bytes.len() < 8 => " (too short to be an image)",
        _ => "",
    };
    format!("{hint}; expected JPEG, PNG, WebP, GIF, BMP or TIFF")
}

fn decode_error(format: Format, reason: impl ToString) -> Error {
    Error::Decode { format: format.name(), reason: reason.to_string() }
}

/// Allocates the zero-filled output buffer only once the size has passed the limits; a failed allocation
/// is an error, not an abort.
fn alloc_pixels(len: usize, format: Format) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| decode_error(format, format!("cannot allocate {len} bytes for pixels")))?;
    v.resize(len, 0);
    Ok(v)
}

fn image_rs_decoder<'a>(
    bytes: &'a [u8],
    format: Format,
    limits: &Limits,
) -> Result<Box<dyn ::image::ImageDecoder + 'a>> {
    use ::image::ImageFormat as F;
    let f = match format {
        Format::Png => F::Png,
        Format::WebP => F::WebP,
        Format::Bmp => F::Bmp,
        Format::Tiff => F::Tiff,
        Format::Jpeg | Format::Gif => unreachable!("decoded by dedicated code"),
    };
    let mut reader = ::image::ImageReader::with_format(Cursor::new(bytes), f);
    // Second line of defence: the image crate's own allocation cap, in case a decoder allocates
    // something proportional to the declared size while reading the header. (Its width/height caps are
    // left off so that our own check, with its `TooLarge` error naming the limit, is the one that fires.)
    let mut l = ::image::Limits::default();
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(l);
    let decoder = reader.into_decoder().map_err(|e| image_rs_error(format, e))?;
    Ok(Box::new(decoder))
}

fn image_rs_error(format: Format, e: ::image::ImageError) -> Error {
    match e {
        ::image::ImageError::Unsupported(u) => decode_error(format, format!("unsupported variant: {u}")),
        ::image::ImageError::Limits(l) => decode_error(format, format!("exceeds decoder limits: {l}")),
        other => decode_error(format, other),
    }
}

fn decode_image_rs(bytes: &[u8], format: Format, limits: &Limits) -> Result<Decoded> {
    use ::image::{ColorType, ImageDecoder};
    let decoder = image_rs_decoder(bytes, format, limits)?;
    let (width, height) = decoder.dimensions();
    limits.check_dimensions(width, height)?;
    if width == 0 || height == 0 {
        return Err(decode_error(format, "zero width or height"));
    }
    let color = decoder.color_type();
    let total = usize::try_from(decoder.total_bytes())
        .map_err(|_| decode_error(format, "image too large for this platform"))?;
    let mut raw = alloc_pixels(total, format)?;
    decoder.read_image(&mut raw).map_err(|e| image_rs_error(format, e))?;
    let n = width as usize * height as usize;
    let data = match color {
        ColorType::L8 => PixelData::Gray(raw),
        ColorType::Rgb8 => PixelData::Rgb(raw),
        ColorType::La8 => PixelData::Gray(keep_channels::<1>(&raw, 2, n)),
        ColorType::Rgba8 => PixelData::Rgb(keep_channels::<3>(&raw, 4, n)),
        // 16-bit: keep the high byte, as Pillow does for 16-bit RGB(A) PNGs.
        ColorType::L16 => PixelData::Gray(high_bytes::<1>(&raw, 1, n)),
        ColorType::La16 => PixelData::Gray(high_bytes::<1>(&raw, 2, n)),
        ColorType::Rgb16 => PixelData::Rgb(high_bytes::<3>(&raw, 3, n)),
        ColorType::Rgba16 => PixelData::Rgb(high_bytes::<3>(&raw, 4, n)),
        ColorType::Rgb32F => PixelData::Rgb(float_to_u8::<3>(&raw, 3, n)),
        ColorType::Rgba32F => PixelData::Rgb(float_to_u8::<3>(&raw, 4, n)),
        other => return Err(decode_error(format, format!("unsupported colour type {other:?}"))),
    };
    Ok(Decoded { width, height, format, data })
}

/// The first `K` of every `stride` bytes (drops alpha).
fn keep_channels<const K: usize>(raw: &[u8], stride: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * K);
    for px in raw.chunks_exact(stride).take(n) {
        out.extend_from_slice(&px[..K]);
    }
    out
}

/// The high byte of the first `K` of every `stride` native-endian u16 samples.
fn high_bytes<const K: usize>(raw: &[u8], stride: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * K);
    for px in raw.chunks_exact(stride * 2).take(n) {
        for c in 0..K {
            out.push((u16::from_ne_bytes([px[2 * c], px[2 * c + 1]]) >> 8) as u8);
        }
    }
    out
}

/// Float samples (0.0–1.0, e.g. floating-point TIFF) to 8 bits, clamped and rounded.
fn float_to_u8<const K: usize>(raw: &[u8], stride: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * K);
    for px in raw.chunks_exact(stride * 4).take(n) {
        for c in 0..K {
            let v = f32::from_ne_bytes(px[4 * c..4 * c + 4].try_into().expect("4 bytes"));
            out.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    out
}

fn gif_decoder(bytes: &[u8], memory_limit: usize) -> Result<gif::Decoder<Cursor<&[u8]>>> {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::Indexed);
    opts.set_memory_limit(gif::MemoryLimit::Bytes(
        std::num::NonZeroU64::new(memory_limit as u64).expect("non-zero limit"),
    ));
    opts.read_info(Cursor::new(bytes)).map_err(|e| decode_error(Format::Gif, e))
}

/// First frame of a GIF, rebuilt from palette indices the way Pillow loads it: the canvas is the logical
/// screen, grown to cover the first frame if that frame extends past it, filled with the frame's
/// transparent index (or index 0) where the frame does not cover it; indices map through the local palette,
/// else the global one, and indices past the palette are black. Transparency is dropped like any other
/// alpha. The frame's own size is checked against the limits before its pixels are read.
fn decode_gif(bytes: &[u8], limits: &Limits) -> Result<Decoded> {
    let f = Format::Gif;
    let budget = usize::try_from(limits.max_pixels.saturating_mul(4)).unwrap_or(usize::MAX).max(1);
    let mut decoder = gif_decoder(bytes, budget)?;
    let (screen_w, screen_h) = (u32::from(decoder.width()), u32::from(decoder.height()));
    limits.check_dimensions(screen_w, screen_h)?;
    let mut frame = decoder
        .next_frame_info()
        .map_err(|e| decode_error(f, e))?
        .ok_or_else(|| decode_error(f, "no image frame"))?
        .clone();
    let width = screen_w.max(u32::from(frame.left) + u32::from(frame.width));
    let height = screen_h.max(u32::from(frame.top) + u32::from(frame.height));
    limits.check_dimensions(width, height)?;
    if width == 0 || height == 0 {
        return Err(decode_error(f, "zero width or height"));
    }
    let mut buffer = alloc_pixels(decoder.buffer_size(), f)?;
    decoder.read_into_buffer(&mut buffer).map_err(|e| decode_error(f, e))?;
    frame.buffer = std::borrow::Cow::Owned(buffer);
    let global = decoder.global_palette().map(<[u8]>::to_vec);
    let palette = frame.palette.as_deref().or(global.as_deref()).unwrap_or(&[]);
    let fill = frame.transparent.unwrap_or(0);
    let (w, h) = (width as usize, height as usize);
    let mut indices = alloc_pixels(w * h, f)?;
    indices.fill(fill);
    let (fl, ft, fw) = (frame.left as usize, frame.top as usize, frame.width as usize);
    for (y, row) in frame.buffer.chunks_exact(fw.max(1)).enumerate().take(frame.height as usize) {
        let ty = ft + y;
        if ty >= h || fl >= w {
            continue;
        }
        let n = fw.min(w - fl);
        indices[ty * w + fl..ty * w + fl + n].copy_from_slice(&row[..n]);
    }
    let mut lut = [[0u8; 3]; 256];
    for (entry, rgb) in lut.iter_mut().zip(palette.chunks_exact(3)) {
        entry.copy_from_slice(rgb);
    }
    let mut rgb = alloc_pixels(w * h * 3, f)?;
    for (px, &i) in rgb.chunks_exact_mut(3).zip(indices.iter()) {
        px.copy_from_slice(&lut[i as usize]);
    }
    Ok(Decoded { width, height, format: f, data: PixelData::Rgb(rgb) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_bytes() {
        assert_eq!(Format::sniff(b"\xFF\xD8\xFF\xE0"), Some(Format::Jpeg));
        assert_eq!(Format::sniff(b"\x89PNG\r\n\x1a\n"), Some(Format::Png));
        assert_eq!(Format::sniff(b"GIF89a"), Some(Format::Gif));
        assert_eq!(Format::sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::WebP));
        assert_eq!(Format::sniff(b"BM"), Some(Format::Bmp));
        assert_eq!(Format::sniff(b"II*\0"), Some(Format::Tiff));
        assert_eq!(Format::sniff(b"hello"), None);
    }

    #[test]
    fn limits_name_the_exceeded_dimension() {
        let l = Limits { max_bytes: 10, max_width: 100, max_height: 50, max_pixels: 1000 };
        assert!(matches!(l.check_dimensions(101, 1), Err(Error::TooLarge { what: Limit::Width, .. })));
        assert!(matches!(l.check_dimensions(1, 51), Err(Error::TooLarge { what: Limit::Height, .. })));
        assert!(matches!(l.check_dimensions(100, 11), Err(Error::TooLarge { what: Limit::Pixels, .. })));
        assert!(l.check_dimensions(100, 10).is_ok());
        assert!(matches!(
            decode(&[0u8; 11], &DecodeOptions { limits: l, exif_orientation: false }),
            Err(Error::TooLarge { what: Limit::Bytes, .. })
        ));
    }

    #[test]
    fn unknown_formats_say_what_they_look_like() {
        let e = decode(b"<html><body>", &DecodeOptions::default()).unwrap_err().to_string();
        assert!(e.contains("HTML"), "{e}");
        assert!(matches!(decode(b"", &DecodeOptions::default()), Err(Error::Empty)));
    }
}
