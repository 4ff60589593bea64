//! JPEG through libjpeg-turbo's TurboJPEG 3 API (vendored by `turbojpeg-sys`, statically linked).
//!
//! libjpeg-turbo with its defaults (accurate integer IDCT, "fancy" chroma upsampling) is what Pillow uses, so
//! decoding here gives the very pixels the reference hashes were computed on. The thin wrapper is ours rather
//! than the `turbojpeg` crate's because we need the error *severity*: libjpeg reports benign damage
//! ("extraneous bytes before marker") as warnings after which Pillow keeps the image, and truncation as the
//! warning "Premature end of JPEG file", after which Pillow refuses it.

use super::{alloc_pixels, decode_error, Decoded, Format, Limits, PixelData};
use crate::error::Result;
use std::cell::RefCell;
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

    /// The last error's message and whether it was only a warning.
    fn last_error(&self) -> (String, bool) {
        // SAFETY: self.0 is a live handle; the returned string is owned by the handle and copied at once.
        let msg = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) }.to_string_lossy().into_owned();
        // SAFETY: as above.
        let code = unsafe { tj::tj3GetErrorCode(self.0) };
        (msg, code == tj::TJERR_TJERR_WARNING as libc::c_int)
    }

    fn read_header(&self, bytes: &[u8]) -> Result<Header> {
        // SAFETY: the pointer and length describe a live slice; TurboJPEG only reads it.
        let rc = unsafe { tj::tj3DecompressHeader(self.0, bytes.as_ptr(), bytes.len() as tj::size_t) };
        if rc != 0 {
            let (msg, warning) = self.last_error();
            if !warning {
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

thread_local! {
    static HANDLE: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

fn with_handle<T>(f: impl FnOnce(&Handle) -> Result<T>) -> Result<T> {
    HANDLE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Handle::new()?);
        }
        f(slot.as_ref().expect("initialised above"))
    })
}

pub(super) fn probe(bytes: &[u8]) -> Result<(u32, u32)> {
    with_handle(|h| h.read_header(bytes).map(|hd| (hd.width, hd.height)))
}

pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Decoded> {
    with_handle(|h| {
        let hd = h.read_header(bytes)?;
        limits.check_dimensions(hd.width, hd.height)?;
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
        let mut buf = alloc_pixels(w * hgt * channels, Format::Jpeg)?;
        // SAFETY: `buf` holds exactly height rows of `pitch` bytes for the requested pixel format, and the
        // input slice is live for the call.
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
            let (msg, warning) = h.last_error();
            // libjpeg pads a truncated stream with grey and calls it a warning; Pillow refuses such a file,
            // and so do we: a hash of half an image is not the hash of the image.
            if !warning || msg.contains("Premature end of JPEG file") {
                let reason = if warning { format!("truncated ({msg})") } else { msg };
                return Err(decode_error(Format::Jpeg, reason));
            }
        }
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
