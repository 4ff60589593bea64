//! JPEG through libjpeg-turbo's TurboJPEG 3 API (vendored by `turbojpeg-sys`, statically linked).
//!
//! libjpeg-turbo with its defaults (accurate integer IDCT, "fancy" chroma upsampling) is what Pillow uses, so
//! decoding here gives the very pixels the reference hashes were computed on. The thin wrapper is ours rather
//! than the `turbojpeg` crate's because we need to tell libjpeg's warnings from its errors, which TurboJPEG
//! does not do reliably (its error code stays "warning" once any warning was raised, even when a fatal
//! error follows; see [`is_benign_warning`]).
//!
//! Policy, matching Pillow: a stream with damaged entropy data still decodes (libjpeg warns and carries on,
//! and so does Pillow), but a stream that ends early is refused ("image file is truncated"), since a hash
//! of half an image is not the hash of the image.

use super::{decode_error, reserve_pixels, Decoded, Format, Limits, PixelData};
use crate::error::Result;
use std::ffi::CStr;
use turbojpeg_sys as tj;

/// An owned TurboJPEG decompressor handle. One per thread (TurboJPEG handles are not thread-safe, and
/// creating one per image would cost an allocation of libjpeg's state every time).
struct Handle(tj::tjhandle);

impl Handle {
    fn new() -> Result<Handle> {
        // SAFETY: tj3Init has no preconditions; a null return is handled.
        let ptr = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as libc::c_int) };
        if ptr.is_null() {
            return Err(decode_error(Format::Jpeg, "cannot initialise libjpeg-turbo"));
        }
        Ok(Handle(ptr))
    }

    fn get(&self, param: tj::TJPARAM) -> libc::c_int {
        // SAFETY: self.0 is a live handle.
        unsafe { tj::tj3Get(self.0, param as libc::c_int) }
    }

    fn set(&self, param: tj::TJPARAM, value: libc::c_int) {
        // SAFETY: self.0 is a live handle. Setting a known parameter cannot fail.
        unsafe { tj::tj3Set(self.0, param as libc::c_int, value) };
    }

    /// The last error's message.
    fn last_error(&self) -> String {
        // SAFETY: self.0 is a live handle; the returned string is owned by the handle and copied at once.
        unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) }.to_string_lossy().into_owned()
    }

    /// Reads the frame header. Must be called on a fresh handle: on a stream that ends before its frame
    /// header TurboJPEG can return success and leave the previous image's dimensions in place.
    fn read_header(&self, bytes: &[u8]) -> Result<Header> {
        // SAFETY: the pointer and length describe a live slice; TurboJPEG only reads it.
        let rc = unsafe { tj::tj3DecompressHeader(self.0, bytes.as_ptr(), bytes.len() as tj::size_t) };
        if rc != 0 {
            let msg = self.last_error();
            if !is_benign_warning(&msg) {
                return Err(decode_error(Format::Jpeg, msg));
            }
        }
        let width = self.get(tj::TJPARAM_TJPARAM_JPEGWIDTH);
        let height = self.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT);
        if width <= 0 || height <= 0 {
            return Err(decode_error(Format::Jpeg, "no frame header (SOF) before the image data"));
        }
        Ok(Header {
            width: width as u32,
            height: height as u32,
            colorspace: self.get(tj::TJPARAM_TJPARAM_COLORSPACE),
            precision: self.get(tj::TJPARAM_TJPARAM_PRECISION),
        })
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: self.0 came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) };
    }
}

struct Header {
    width: u32,
    height: u32,
    colorspace: libc::c_int,
    precision: libc::c_int,
}

/// A fresh handle per image: a reused one can leak the previous image's header into the next (see
/// [`Handle::read_header`]), and creating one costs a few microseconds against milliseconds of decoding.
fn with_handle<T>(f: impl FnOnce(&Handle) -> Result<T>) -> Result<T> {
    f(&Handle::new()?)
}

/// libjpeg's warnings about damaged but decodable data (`JWRN_*` in jerror.h), after which libjpeg and
/// Pillow both carry on. Anything else reported by a failed call is fatal. Truncation is *not* here: it
/// is detected from the stream structure by [`ends_properly`], because its warning can be followed by
/// others that would hide it.
fn is_benign_warning(msg: &str) -> bool {
    const BENIGN: &[&str] = &[
        "Corrupt JPEG data", // extraneous bytes, bad Huffman/arithmetic code, RST resync, bad ICC
        "Inconsistent progression", // JWRN_BOGUS_PROGRESSION
        "Invalid SOS parameters for sequential JPEG",
        "Unknown Adobe color transform code",
        "Warning: unknown JFIF revision number",
        "Application transferred too many scanlines",
    ];
    BENIGN.iter().any(|b| msg.starts_with(b)) && !msg.contains("Premature end")
}

/// Whether the stream has an end-of-image marker after its last start-of-scan, i.e. was not cut short.
/// Entropy-coded data cannot contain `FF D9` (a data byte `FF` is always followed by `00` or a restart
/// marker), so a missing EOI after the last SOS means the file ends inside the image data. Data after the
/// EOI (trailers some tools append) is allowed, as Pillow allows it. An EOI inside an EXIF thumbnail comes
/// before the main image's SOS, so it does not count.
fn ends_properly(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|m| m == [0xFF, 0xDA]);
    match last_sos {
        Some(i) => bytes[i..].windows(2).any(|m| m == [0xFF, 0xD9]),
        None => false,
    }
}

pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Decoded> {
    with_handle(|h| {
        let hd = h.read_header(bytes)?;
        limits.check_dimensions(hd.width, hd.height)?;
        // libjpeg pads a stream that ends early with grey and only warns; Pillow refuses such a file.
        if !ends_properly(bytes) {
            return Err(decode_error(Format::Jpeg, "truncated: no end-of-image marker after the image data"));
        }
        if hd.precision != 8 {
            return Err(decode_error(Format::Jpeg, format!("{}-bit JPEG is not supported", hd.precision)));
        }
        // Progressive JPEGs buffer every coefficient; cap libjpeg's own memory at what the pixel limit allows.
        let max_mb = (limits.max_pixels.saturating_mul(4 * 2) >> 20).saturating_add(64);
        h.set(tj::TJPARAM_TJPARAM_MAXMEMORY, max_mb.min(i32::MAX as u64) as libc::c_int);
        let (w, hgt) = (hd.width as usize, hd.height as usize);
        let cs = hd.colorspace as u32;
        let (pf, channels) = if cs == tj::TJCS_TJCS_GRAY {
            (tj::TJPF_TJPF_GRAY, 1)
        } else if cs == tj::TJCS_TJCS_CMYK || cs == tj::TJCS_TJCS_YCCK {
            (tj::TJPF_TJPF_CMYK, 4)
        } else {
            (tj::TJPF_TJPF_RGB, 3)
        };
        let len = w * hgt * channels;
        let mut buf = reserve_pixels(len, Format::Jpeg)?;
        // SAFETY: `buf` has capacity for exactly `hgt` rows of `pitch = w * channels` bytes in the requested
        // pixel format, and the input slice is live for the call. TurboJPEG writes every byte of every row
        // of a successful decode; on failure the buffer is dropped without being read.
        let rc = unsafe {
            tj::tj3Decompress8(
                h.0,
                bytes.as_ptr(),
                bytes.len() as tj::size_t,
                buf.as_mut_ptr(),
                (w * channels) as libc::c_int,
                pf as libc::c_int,
            )
        };
        if rc != 0 {
            let msg = h.last_error();
            if !is_benign_warning(&msg) {
                return Err(decode_error(Format::Jpeg, msg));
            }
        }
        // SAFETY: the decode above initialised all `len` bytes (see above).
        unsafe { buf.set_len(len) };
        let data = match channels {
            1 => PixelData::Gray(buf),
            3 => PixelData::Rgb(buf),
            _ => PixelData::Rgb(cmyk_to_rgb(&buf)),
        };
        Ok(Decoded { width: hd.width, height: hd.height, format: Format::Jpeg, data })
    })
}

/// Pillow's CMYK JPEG handling: the samples are taken as Adobe-inverted (raw mode `CMYK;I`), then
/// `convert("RGB")` computes `R = k' - k'·C/255` with `k' = 255 - K` and its rounding `MULDIV255`.
/// With the inversion folded in, `k'` is the stored K sample and `C` is `255 - stored C`.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    fn muldiv255(a: u32, b: u32) -> u32 {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    }
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let nk = u32::from(px[3]);
        for &s in &px[..3] {
            let c = 255 - u32::from(s);
            out.push(nk.saturating_sub(muldiv255(c, nk)) as u8);
        }
    }
    out
}
