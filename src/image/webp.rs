//! Still WebP images through libwebp (vendored by `libwebp-sys`, statically linked): the decoder Pillow
//! uses, so lossy images decode to Pillow's exact pixels, and about twice as fast as the pure-Rust decoder.
//! Animated WebP goes through the `image` crate, which composites the first frame onto the canvas as
//! Pillow's animation decoder does.

use super::{alloc_pixels, decode_error, Decoded, Format, Limits, PixelData};
use crate::error::Result;
use libwebp_sys as webp;

/// What the bitstream header says.
pub(super) struct Features {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) animated: bool,
}

/// Reads the header (VP8/VP8L/VP8X chunks) without decoding.
pub(super) fn features(bytes: &[u8]) -> Result<Features> {
    let mut f = std::mem::MaybeUninit::<webp::WebPBitstreamFeatures>::zeroed();
    // SAFETY: the pointer and length describe a live slice that libwebp only reads; `f` is a properly
    // sized, zero-initialised out-parameter; the ABI version is the one the bindings were made for.
    let status = unsafe {
        webp::WebPGetFeaturesInternal(
            bytes.as_ptr(),
            bytes.len(),
            f.as_mut_ptr(),
            webp::WEBP_DECODER_ABI_VERSION as libc::c_int,
        )
    };
    if status != webp::VP8StatusCode::VP8_STATUS_OK {
        return Err(decode_error(Format::WebP, status_message(status)));
    }
    // SAFETY: written by libwebp on success (and zero-initialised before).
    let f = unsafe { f.assume_init() };
    if f.width <= 0 || f.height <= 0 {
        return Err(decode_error(Format::WebP, "zero width or height"));
    }
    Ok(Features { width: f.width as u32, height: f.height as u32, animated: f.has_animation != 0 })
}

/// Decodes a still WebP to RGB (alpha, if any, is dropped as everywhere else). `None` for animations.
pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Option<Decoded>> {
    let f = features(bytes)?;
    limits.check_dimensions(f.width, f.height)?;
    if f.animated {
        return Ok(None);
    }
    let (w, h) = (f.width as usize, f.height as usize);
    let len = w * h * 3;
    // Zero-filled, not merely reserved: the buffer is initialised memory whatever libwebp does with it, so no
    // `set_len` rests on a promise about a C decoder's behaviour (the JPEG decoder's rule too).
    let mut buf = alloc_pixels(len, Format::WebP)?;
    // SAFETY: `buf` holds `h` rows of `w * 3` initialised bytes and outlives the call; libwebp writes at most
    // `len` bytes at a stride of `w * 3` and reads only `bytes`.
    let out = unsafe {
        webp::WebPDecodeRGBInto(bytes.as_ptr(), bytes.len(), buf.as_mut_ptr(), len, (w * 3) as libc::c_int)
    };
    if out.is_null() {
        return Err(decode_error(Format::WebP, "corrupt or truncated bitstream"));
    }
    Ok(Some(Decoded { width: f.width, height: f.height, format: Format::WebP, data: PixelData::Rgb(buf) }))
}

fn status_message(s: webp::VP8StatusCode) -> &'static str {
    use webp::VP8StatusCode as S;
    match s {
        S::VP8_STATUS_OUT_OF_MEMORY => "out of memory",
        S::VP8_STATUS_INVALID_PARAM => "invalid parameter",
        S::VP8_STATUS_BITSTREAM_ERROR => "corrupt bitstream",
        S::VP8_STATUS_UNSUPPORTED_FEATURE => "unsupported feature",
        S::VP8_STATUS_NOT_ENOUGH_DATA => "truncated (not enough data)",
        _ => "decoding failed",
    }
}
