//! JPEG through libjpeg-turbo's TurboJPEG 3 API (vendored by `turbojpeg-sys`, statically linked).
//!
//! libjpeg-turbo with its defaults (accurate integer IDCT, "fancy" chroma upsampling) is what Pillow uses, so
//! decoding here gives the very pixels the reference hashes were computed on.
//!
//! Policy, matching Pillow: a stream with damaged entropy data still decodes (libjpeg warns and carries on,
//! and so does Pillow), but a stream that ends early is refused ("image file is truncated"), since a hash
//! of half an image is not the hash of the image.
//!
//! How the outcome is decided, without ever reading libjpeg's message text (which is for people, differs
//! between versions and only ever holds the *first* warning of a call):
//! - **Truncation** from the stream's structure ([`stream_end`]): the marker segments and scans are walked the
//!   way libjpeg reads them, up to the first end-of-image marker. A stream that runs out first is truncated,
//!   whatever libjpeg said about it; bytes after the end-of-image marker are ignored, as libjpeg ignores them.
//! - **Errors** from TurboJPEG's error state: a failed call whose error code is `TJERR_FATAL` is an error. One
//!   whose code is `TJERR_WARNING` may still have ended in a fatal error, because TurboJPEG keeps the code at
//!   "warning" once any warning was raised in the call; so the decision is then taken from what libjpeg did
//!   to the output buffer ([`Decompressor::wrote_every_row`]): every row written means the image was decoded
//!   to its end and the warnings were about damaged data, a row left unwritten means the decode was cut
//!   short by a fatal error.
//! - The output buffer is zero-filled before libjpeg writes to it, so no byte of it is ever uninitialised,
//!   whatever libjpeg did or did not write.
//!
//! One case is decided differently from Pillow: warnings, then every row, then a fatal error in the markers
//! between the last scan and the end-of-image marker. Every pixel was decoded, so the image is kept here;
//! Pillow refuses it. Without the earlier warning the same stream is refused (`TJERR_FATAL`). TurboJPEG
//! offers no way to tell the two apart after a warning but the message text.

use super::{alloc_pixels, decode_error, Decoded, Format, Limits, PixelData};
use crate::error::{Error, Result};
use std::ffi::CStr;
use turbojpeg_sys as tj;

/// An owned TurboJPEG decompressor handle (TurboJPEG handles are not thread-safe).
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

    /// Whether the last failed call on this handle raised a warning (`TJERR_WARNING`), possibly followed by a
    /// fatal error, rather than only a fatal error (`TJERR_FATAL`).
    fn warned(&self) -> bool {
        // SAFETY: self.0 is a live handle.
        let code = unsafe { tj::tj3GetErrorCode(self.0) };
        code == tj::TJERR_TJERR_WARNING as libc::c_int
    }

    /// The last error's message, for the error we report. Never used to decide anything.
    fn message(&self) -> String {
        // SAFETY: self.0 is a live handle; the returned string is owned by the handle (or is TurboJPEG's
        // thread-local buffer) and is copied at once.
        unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) }.to_string_lossy().into_owned()
    }

    fn error(&self) -> Error {
        decode_error(Format::Jpeg, self.message())
    }

    /// Reads the frame header. Must be called on a fresh handle, whose header fields are still -1: then a
    /// field that is not set afterwards means the header was not read, whatever the return code said
    /// (TurboJPEG can return success on a stream that ends before its frame header, and a fatal error
    /// after a warning comes back with the code of the warning).
    fn read_header(&self, bytes: &[u8]) -> Result<Header> {
        // SAFETY: the pointer and length describe a live slice; TurboJPEG only reads it.
        let rc = unsafe { tj::tj3DecompressHeader(self.0, bytes.as_ptr(), bytes.len() as tj::size_t) };
        if rc != 0 && !self.warned() {
            return Err(self.error());
        }
        let width = self.get(tj::TJPARAM_TJPARAM_JPEGWIDTH);
        let height = self.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT);
        let colorspace = self.get(tj::TJPARAM_TJPARAM_COLORSPACE);
        let precision = self.get(tj::TJPARAM_TJPARAM_PRECISION);
        if width <= 0 || height <= 0 || colorspace < 0 {
            return Err(if rc != 0 {
                self.error()
            } else {
                decode_error(Format::Jpeg, "no frame header (SOF) before the image data")
            });
        }
        Ok(Header { width: width as u32, height: height as u32, colorspace, precision })
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

/// What one decode asks of TurboJPEG; [`Decompressor::run`] can repeat it on a fresh handle.
struct Decompressor<'a> {
    bytes: &'a [u8],
    max_memory_mb: libc::c_int,
    pixel_format: tj::TJPF,
    /// Bytes per output row.
    pitch: usize,
    rows: usize,
}

/// How a call to `tj3Decompress8` ended.
enum Outcome {
    /// Success without any warning.
    Clean,
    /// Failed with at least one warning raised; a fatal error may have followed it. The message is libjpeg's
    /// last one: the fatal error's if there was one (it replaces the warning's), else the first warning's.
    Warned(String),
    /// Failed with a fatal error and no warning before it.
    Fatal(Error),
}

impl Decompressor<'_> {
    /// Decodes into `buf` (exactly `rows * pitch` bytes, already initialised) on a fresh handle: a reused
    /// handle can carry the previous image's header into the next, and a fresh one costs a few microseconds
    /// against milliseconds of decoding.
    fn run(&self, buf: &mut [u8]) -> Result<Outcome> {
        assert_eq!(buf.len(), self.rows * self.pitch, "output buffer size");
        let h = Handle::new()?;
        // Progressive JPEGs buffer every coefficient; libjpeg's own memory is capped too.
        h.set(tj::TJPARAM_TJPARAM_MAXMEMORY, self.max_memory_mb);
        // SAFETY: `buf` is `rows` rows of `pitch` bytes, the size of the frame the header declared in the
        // requested pixel format (no scaling or cropping is set, and rows are written top-down), so TurboJPEG
        // writes within it; the input slice is live for the call and only read.
        let rc = unsafe {
            tj::tj3Decompress8(
                h.0,
                self.bytes.as_ptr(),
                self.bytes.len() as tj::size_t,
                buf.as_mut_ptr(),
                self.pitch as libc::c_int,
                self.pixel_format as libc::c_int,
            )
        };
        Ok(match rc {
            0 => Outcome::Clean,
            _ if h.warned() => Outcome::Warned(h.message()),
            _ => Outcome::Fatal(h.error()),
        })
    }

    /// After a decode into `buf` that ended `Warned`: whether libjpeg wrote every row, i.e. decoded the image
    /// to its end rather than stopping at a fatal error.
    ///
    /// libjpeg hands out rows strictly top to bottom and stops at a fatal error, so every row was written if
    /// and only if the last one was. A fatal error comes from reading the stream, never from converting
    /// already decoded data into a row, so a row is written whole or not at all: a last row that is no
    /// longer all zeros (how the decode found it) was written. An all-zero last row is ambiguous (libjpeg
    /// may have written zeros), so then the same bytes are decoded again with the same settings, which
    /// writes the same values to the same bytes, into a last row filled with 0xFF: if libjpeg wrote it, it
    /// is all zeros again, if not, it keeps the fill. This second decode happens only for damaged streams
    /// whose last row is black.
    fn wrote_every_row(&self, buf: &mut [u8]) -> Result<bool> {
        let last = buf.len() - self.pitch..;
        if buf[last.clone()].iter().any(|&b| b != 0) {
            return Ok(true);
        }
        buf[last.clone()].fill(0xFF);
        match self.run(buf)? {
            Outcome::Warned(_) => Ok(buf[last].iter().all(|&b| b == 0)),
            // Decoding the same bytes twice cannot end differently; if it ever does, trust neither.
            Outcome::Clean | Outcome::Fatal(_) => Ok(false),
        }
    }
}

/// Where the walk of a stream's structure ended ([`stream_end`]).
#[derive(Debug, PartialEq, Eq)]
enum StreamEnd {
    /// At an end-of-image marker (what follows it is not part of the image).
    Eoi,
    /// The bytes ran out inside entropy-coded (scan) data.
    InScan,
    /// The bytes ran out inside a marker segment.
    InSegment,
    /// The bytes ran out between marker segments, before an end-of-image marker.
    BeforeEoi,
}

/// Walks the stream from its start-of-image marker the way libjpeg reads it, up to the first end-of-image
/// marker: marker segments are skipped by their declared length (so markers inside an EXIF thumbnail or a
/// comment do not count), bytes between segments that are not markers are skipped (libjpeg warns about
/// them and carries on), and a start-of-scan is followed by entropy-coded data, which ends at the first
/// marker other than a restart marker (a data byte `FF` is always followed by a stuffed `00`).
fn stream_end(bytes: &[u8]) -> StreamEnd {
    let mut i = 2; // after SOI
    loop {
        // Find the next marker: FF, any number of FF fill bytes, then the marker code. A lone FF 00 or any
        // other byte out here is garbage that libjpeg skips.
        let Some(ff) = bytes[i.min(bytes.len())..].iter().position(|&b| b == 0xFF) else {
            return StreamEnd::BeforeEoi;
        };
        i += ff;
        while bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let Some(&code) = bytes.get(i + 1) else { return StreamEnd::BeforeEoi };
        i += 2;
        match code {
            0x00 => continue,
            0xD9 => return StreamEnd::Eoi,
            // Markers without a length: SOI, RST0-7, TEM.
            0xD8 | 0xD0..=0xD7 | 0x01 => continue,
            _ => {}
        }
        let Some(len) = bytes.get(i..i + 2).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]]))) else {
            return StreamEnd::InSegment;
        };
        // A length below 2 is invalid; libjpeg refuses it for the segments it parses and skips nothing for
        // the others, which is what advancing past the length field does here.
        i += len.max(2);
        if i > bytes.len() {
            return StreamEnd::InSegment;
        }
        if code == 0xDA {
            match scan_end(&bytes[i..]) {
                Some(n) => i += n,
                None => return StreamEnd::InScan,
            }
        }
    }
}

/// Length of the entropy-coded data at the start of `data`: the offset of the first marker that ends it
/// (anything but a stuffed `FF 00` or a restart marker `FF D0`..`FF D7`), or `None` if `data` ends first.
fn scan_end(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        i += data[i..].iter().position(|&b| b == 0xFF)?;
        let mut j = i + 1;
        while data.get(j) == Some(&0xFF) {
            j += 1;
        }
        match *data.get(j)? {
            0x00 | 0xD0..=0xD7 => i = j + 1,
            _ => return Some(i),
        }
    }
}

pub(super) fn decode(bytes: &[u8], limits: &Limits) -> Result<Decoded> {
    let hd = Handle::new()?.read_header(bytes)?;
    limits.check_dimensions(hd.width, hd.height)?;
    // libjpeg pads a stream that ends early with grey and only warns; Pillow refuses such a file.
    let cut = match stream_end(bytes) {
        StreamEnd::Eoi => None,
        StreamEnd::InScan => Some("it ends inside the image data"),
        StreamEnd::InSegment => Some("it ends inside a marker segment"),
        StreamEnd::BeforeEoi => Some("no end-of-image marker"),
    };
    if let Some(cut) = cut {
        return Err(decode_error(Format::Jpeg, format!("truncated (Premature end of JPEG file: {cut})")));
    }
    if hd.precision != 8 {
        return Err(decode_error(Format::Jpeg, format!("{}-bit JPEG is not supported", hd.precision)));
    }
    let (w, rows) = (hd.width as usize, hd.height as usize);
    let cs = hd.colorspace as u32;
    let (pixel_format, channels) = if cs == tj::TJCS_TJCS_GRAY {
        (tj::TJPF_TJPF_GRAY, 1)
    } else if cs == tj::TJCS_TJCS_CMYK || cs == tj::TJCS_TJCS_YCCK {
        (tj::TJPF_TJPF_CMYK, 4)
    } else {
        (tj::TJPF_TJPF_RGB, 3)
    };
    // What the pixel limit allows libjpeg for its own buffers (coefficients of progressive JPEGs).
    let max_mb = (limits.max_pixels.saturating_mul(4 * 2) >> 20).saturating_add(64);
    let job = Decompressor {
        bytes,
        max_memory_mb: max_mb.min(i32::MAX as u64) as libc::c_int,
        pixel_format,
        pitch: w * channels,
        rows,
    };
    let mut buf = alloc_pixels(rows * job.pitch, Format::Jpeg)?;
    match job.run(&mut buf)? {
        Outcome::Clean => {}
        Outcome::Fatal(e) => return Err(e),
        Outcome::Warned(message) => {
            if !job.wrote_every_row(&mut buf)? {
                return Err(decode_error(Format::Jpeg, message));
            }
        }
    }
    let data = match channels {
        1 => PixelData::Gray(buf),
        3 => PixelData::Rgb(buf),
        _ => PixelData::Rgb(cmyk_to_rgb(&buf)),
    };
    Ok(Decoded { width: hd.width, height: hd.height, format: Format::Jpeg, data })
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

#[cfg(test)]
mod tests {
    use super::{scan_end, stream_end, StreamEnd};

    /// SOI; an APP1 segment whose payload holds the bytes of an EOI and an SOS (as an EXIF thumbnail does);
    /// garbage between segments; an SOS header; entropy data with a stuffed byte, a restart marker and fill
    /// bytes; EOI; then a trailer with another SOS and no EOI.
    fn stream() -> Vec<u8> {
        let mut s = vec![0xFF, 0xD8];
        s.extend([0xFF, 0xE1, 0x00, 0x08, 0xFF, 0xD9, 0xFF, 0xDA, 0x00, 0x02]);
        s.extend([0x12, 0x34]);
        s.extend([0xFF, 0xFF, 0xDA, 0x00, 0x04, 0x01, 0x00]);
        s.extend([0x11, 0xFF, 0x00, 0x22, 0xFF, 0xD0, 0x33, 0xFF, 0xFF, 0xD1, 0x44]);
        s.extend([0xFF, 0xD9]);
        s
    }

    #[test]
    fn the_walk_stops_at_the_first_eoi_outside_segments_and_scans() {
        let s = stream();
        assert_eq!(stream_end(&s), StreamEnd::Eoi);
        let with_trailer = [&s[..], &[0xFF, 0xDA, 0x00, 0x08, 1, 2, 3]].concat();
        assert_eq!(stream_end(&with_trailer), StreamEnd::Eoi);
    }

    #[test]
    fn every_cut_is_found_and_named_by_where_it_falls() {
        let s = stream();
        let sos = 2 + 10 + 2 + 1; // SOI, APP1, garbage, one fill byte
        assert_eq!(&s[sos..sos + 2], &[0xFF, 0xDA]);
        let data = sos + 2 + 4;
        for cut in 2..s.len() {
            let want = if cut < 4 || (12..=sos + 1).contains(&cut) {
                StreamEnd::BeforeEoi // before the APP1 marker's length, or after APP1 and before the SOS length
            } else if cut < data {
                StreamEnd::InSegment
            } else {
                StreamEnd::InScan
            };
            assert_eq!(stream_end(&s[..cut]), want, "cut at {cut}");
        }
    }

    #[test]
    fn scan_data_ends_at_the_first_marker_that_is_not_a_restart() {
        assert_eq!(scan_end(&[1, 0xFF, 0x00, 2, 0xFF, 0xD7, 3, 0xFF, 0xC4]), Some(7));
        assert_eq!(scan_end(&[1, 0xFF, 0xFF, 0xFF, 0xD9]), Some(1));
        assert_eq!(scan_end(&[1, 0xFF, 0x00, 2, 0xFF]), None);
        assert_eq!(scan_end(&[]), None);
    }
}
