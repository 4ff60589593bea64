//! Hostile, broken and degenerate inputs through the library (`image::decode` and `pipeline::Hashers`).
//!
//! Every case must end in a typed [`Error`] that says what was wrong, or in the answer the reference
//! (Pillow + Meta's PDQ + imagehash) gives for it, and never in a panic. Inputs are generated here from
//! synthetic pixels (the `image` crate's encoders, the `gif` crate's encoder, hand-built headers), so nothing
//! depends on the corpus and nothing is written to disk.

use crate::common;
use common::crc32;
use pharos::engine::{DecodeAndHash, HashOptions};
use pharos::error::Limit;
use pharos::hash::pdq::PdqHasher;
use pharos::hash::phash::PhashHasher;
use pharos::hash::Hash256;
use pharos::hash::{HashRecord, Hashers};
use pharos::image::{decode, DecodeOptions, Decoded, Format, Limits};
use pharos::pixels::ImageView;
use pharos::Error;

// ---------------------------------------------------------------------------------------------------------
// Input builders
// ---------------------------------------------------------------------------------------------------------

/// SplitMix64: a small seeded generator, so "random" inputs are the same on every run.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// RGB pixels with structure at several scales (so PDQ quality is well above 0) and some noise (so
/// compressed streams are dense and every byte of them matters).
fn synthetic_rgb(w: u32, h: u32, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let noise = (rng.next_u64() % 24) as u32;
            let blob = if (x / 8 + y / 8 + seed as u32).is_multiple_of(3) { 120 } else { 0 };
            out.push(((x * 255 / w.max(1)) / 2 + blob / 2 + noise) as u8);
            out.push(((y * 255 / h.max(1)) / 2 + noise) as u8);
            out.push((((x ^ y) * 4) % 200 + noise) as u8);
        }
    }
    out
}

fn encode_png(w: u32, h: u32, rgb: &[u8]) -> Vec<u8> {
    use image::ImageEncoder as _;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(rgb, w, h, image::ExtendedColorType::Rgb8)
        .expect("encode PNG");
    out
}

fn encode_jpeg(w: u32, h: u32, rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode(rgb, w, h, image::ExtendedColorType::Rgb8)
        .expect("encode JPEG");
    out
}

/// Any format the `image` crate can write (BMP, TIFF, lossless WebP).
fn encode_with(w: u32, h: u32, rgb: &[u8], format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_raw(w, h, rgb.to_vec()).expect("buffer size");
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// A GIF with a 256-level grey global palette and one full-screen frame per entry of `frames`
/// (palette indices, so the decoded pixels are exactly `(i, i, i)`).
fn encode_gif(w: u16, h: u16, frames: &[Vec<u8>]) -> Vec<u8> {
    let palette: Vec<u8> = (0..=255u8).flat_map(|i| [i, i, i]).collect();
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, w, h, &palette).expect("gif encoder");
        for indices in frames {
            let frame = gif::Frame::from_indexed_pixels(w, h, indices.clone(), None);
            enc.write_frame(&frame).expect("write gif frame");
        }
    }
    out
}

/// A GIF whose logical screen is `w`x`h` with a single 1x1 frame at the origin (a few dozen bytes whatever
/// the declared size).
fn gif_screen_with_tiny_frame(w: u16, h: u16) -> Vec<u8> {
    let mut gif = encode_gif(w, h, &[]);
    assert_eq!(gif.pop(), Some(0x3B), "trailer");
    // Image descriptor (1x1 at 0,0, no local palette), LZW minimum code size 2, one sub-block holding the
    // codes clear(4), 0, end(5) packed LSB-first in 3 bits each, block terminator, trailer.
    gif.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3B]);
    gif
}

/// Grey levels with structure, for GIF frames.
fn grey_pattern(w: u16, h: u16, vertical: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::from(w) * usize::from(h));
    for y in 0..h {
        for x in 0..w {
            let t = if vertical { y } else { x };
            out.push(
                ((u32::from(t) * 255 / u32::from(w.max(h))) as u8)
                    ^ if (x / 4 + y / 4).is_multiple_of(2) { 0 } else { 40 },
            );
        }
    }
    out
}

/// Rewrites the IHDR dimensions of a PNG and its CRC. Checks first that our CRC reproduces the encoder's,
/// so a wrong CRC cannot make the test pass for the wrong reason (a CRC error instead of the limit).
fn patch_png_size(png: &[u8], w: u32, h: u32) -> Vec<u8> {
    assert_eq!(&png[12..16], b"IHDR", "IHDR must be the first chunk");
    let stored = u32::from_be_bytes(png[29..33].try_into().unwrap());
    assert_eq!(crc32(&png[12..29]), stored, "CRC-32 implementation disagrees with the PNG encoder");
    let mut out = png.to_vec();
    out[16..20].copy_from_slice(&w.to_be_bytes());
    out[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&out[12..29]);
    out[29..33].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Offset of the first segment with marker `FF <m>` for which `pred(m)` holds (walking the marker segments,
/// not searching the bytes, so entropy-coded data cannot produce a false hit).
fn jpeg_segment(jpeg: &[u8], pred: impl Fn(u8) -> bool) -> Option<usize> {
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        assert_eq!(jpeg[i], 0xFF, "marker expected at {i}");
        let m = jpeg[i + 1];
        if pred(m) {
            return Some(i);
        }
        if m == 0xDA || m == 0xD9 {
            return None;
        }
        i += 2 + usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
    }
    None
}

/// `(offset, length, marker)` of every marker segment between SOI and the first SOS, inclusive.
fn jpeg_segments(jpeg: &[u8]) -> Vec<(usize, usize, u8)> {
    let mut out = Vec::new();
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        out.push((i, len, jpeg[i + 1]));
        if jpeg[i + 1] == 0xDA {
            break;
        }
        i += 2 + len;
    }
    out
}

/// Rewrites the dimensions in the SOFn segment of a JPEG.
fn patch_jpeg_size(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let sof = jpeg_segment(jpeg, |m| matches!(m, 0xC0..=0xC2)).expect("SOF segment");
    let mut out = jpeg.to_vec();
    out[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    out
}

/// Offset of the first byte of entropy-coded data (just after the SOS header).
fn jpeg_scan_start(jpeg: &[u8]) -> usize {
    let sos = jpeg_segment(jpeg, |m| m == 0xDA).expect("SOS segment");
    sos + 2 + usize::from(u16::from_be_bytes([jpeg[sos + 2], jpeg[sos + 3]]))
}

// ---------------------------------------------------------------------------------------------------------
// Helpers for checking results
// ---------------------------------------------------------------------------------------------------------

fn opts() -> DecodeOptions {
    DecodeOptions::default()
}

fn with_limits(limits: Limits) -> DecodeOptions {
    DecodeOptions { limits, exif_orientation: false }
}

/// Decodes through both entry points and checks they agree on success or on the error message.
fn decode_both(bytes: &[u8], opts: &DecodeOptions) -> Result<(Decoded, HashRecord), Error> {
    let decoded = decode(bytes, opts);
    let hashed =
        Hashers::new().hash_bytes(bytes, &HashOptions { decode: *opts, dihedral: true, exact: false });
    match (decoded, hashed) {
        (Ok(d), Ok(h)) => Ok((d, h)),
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "decode and hash_bytes fail differently");
            Err(a)
        }
        (a, b) => panic!("decode and hash_bytes disagree: {:?} vs {:?}", a.map(|_| ()), b.map(|_| ())),
    }
}

/// Decodes every prefix `file[..cut]` and requires `Error::Decode` for each, collecting all failures.
///
/// Decoders keep state per thread (the TurboJPEG handle), and the answer for some bytes may not depend on
/// what was decoded before them. So each prefix is decoded on a thread that has decoded nothing before,
/// then on this thread right after the intact file, then again; all three answers must be the same error,
/// and the intact file decoded right after a failed prefix must still give the intact pixels.
fn check_cuts(file: &[u8], cuts: &[(usize, &str)], name: &str) {
    let on_fresh_thread = |bytes: &[u8]| {
        std::thread::scope(|s| s.spawn(|| decode(bytes, &opts())).join().expect("decode panicked"))
    };
    let intact = on_fresh_thread(file).expect("the intact file decodes");
    let mut failures = Vec::new();
    for &(cut, what) in cuts {
        let prefix = &file[..cut];
        let label = format!("{name} cut at {cut}/{} ({what})", file.len());
        let fresh = describe(on_fresh_thread(prefix));
        if decode(file, &opts()).ok().as_ref() != Some(&intact) {
            failures.push(format!("{label}: the intact file decoded differently on this thread"));
        }
        let after_good = describe(decode(prefix, &opts()));
        let again = match Hashers::new().hash_bytes(prefix, &HashOptions::default()) {
            Ok(r) => format!("Ok({}x{})", r.width, r.height),
            Err(e) => format!("{e:?}"),
        };
        if !fresh.starts_with("Decode") {
            failures.push(format!("{label}, on a fresh thread: {fresh}"));
        }
        if after_good != fresh || again != fresh {
            failures.push(format!(
                "{label}: the answer depends on what was decoded before: fresh thread {fresh}; \
                 after the intact file {after_good}; then {again}"
            ));
        }
        if decode(file, &opts()).ok().as_ref() != Some(&intact) {
            failures.push(format!("{label}: after it failed, the intact file decoded differently"));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

fn describe(r: Result<Decoded, Error>) -> String {
    match r {
        Ok(d) => format!("Ok({d:?})"),
        Err(e) => format!("{e:?}"),
    }
}

fn expect_unsupported(bytes: &[u8], what: &str) -> String {
    match decode_both(bytes, &opts()) {
        Err(e @ Error::UnsupportedFormat(_)) => e.to_string(),
        Err(e) => panic!("{what}: expected Error::UnsupportedFormat, got {e:?} ({e})"),
        Ok((d, _)) => panic!("{what}: expected Error::UnsupportedFormat, got an image {d:?}"),
    }
}

fn expect_too_large(bytes: &[u8], opts: &DecodeOptions, what: &str) -> (Limit, u64, u64) {
    match decode_both(bytes, opts) {
        Err(Error::TooLarge { what, value, limit }) => (what, value, limit),
        Err(e) => panic!("{what}: expected Error::TooLarge, got {e:?} ({e})"),
        Ok((d, _)) => panic!("{what}: expected Error::TooLarge, got an image {d:?}"),
    }
}

fn hash_of(bytes: &[u8]) -> HashRecord {
    match decode_both(bytes, &opts()) {
        Ok((_, h)) => h,
        Err(e) => panic!("expected an image, got {e:?} ({e})"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Not images at all
// ---------------------------------------------------------------------------------------------------------

#[test]
fn empty_input_is_error_empty() {
    assert!(matches!(decode_both(b"", &opts()), Err(Error::Empty)));
    // Even with limits that would reject everything else, empty is reported as empty.
    let tiny = Limits { max_bytes: 0, max_width: 0, max_height: 0, max_pixels: 0 };
    let e = decode(b"", &with_limits(tiny)).unwrap_err();
    assert!(matches!(e, Error::Empty | Error::TooLarge { .. }), "{e:?}");
}

#[test]
fn random_bytes_are_unsupported_format() {
    let mut rng = Rng(0x5EED_0001);
    for &n in &[1usize, 2, 7, 8, 9, 100, 4096, 100_000] {
        for _ in 0..8 {
            let mut bytes = rng.bytes(n);
            // A random buffer that happens to start with a known magic is not "random bytes" for this test
            // (those are covered by `random_bytes_behind_a_valid_magic_never_panic`).
            if Format::sniff(&bytes).is_some() {
                bytes[0] = 0;
            }
            let msg = expect_unsupported(&bytes, &format!("{n} random bytes"));
            assert!(
                msg.contains("JPEG") && msg.contains("PNG"),
                "message should list what is supported: {msg}"
            );
        }
    }
}

#[test]
fn random_bytes_behind_a_valid_magic_never_panic() {
    // Each format's magic followed by noise: recognised, then refused by the decoder (or, by chance,
    // rejected by a limit). Small limits keep a random header from asking for a large buffer.
    let magics: [&[u8]; 8] = [
        b"\xFF\xD8\xFF",
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        b"GIF87a",
        b"RIFF\x10\0\0\0WEBPVP8 ",
        b"BM",
        b"II*\0",
        b"MM\0*",
    ];
    let limits = Limits { max_bytes: 1 << 20, max_width: 4096, max_height: 4096, max_pixels: 1 << 20 };
    let mut rng = Rng(0x5EED_0002);
    let mut decoded_ok = 0;
    for magic in magics {
        for &n in &[0usize, 1, 4, 16, 64, 1000] {
            for _ in 0..6 {
                let mut bytes = magic.to_vec();
                bytes.extend(rng.bytes(n));
                match decode_both(&bytes, &with_limits(limits)) {
                    Err(Error::Decode { .. } | Error::TooLarge { .. }) => {}
                    Err(e) => panic!("magic {magic:?} + {n} random bytes: unexpected error kind {e:?}"),
                    Ok(_) => decoded_ok += 1,
                }
            }
        }
    }
    // A decoder that accepts noise is not wrong as such, but it would be surprising for more than a handful.
    assert!(decoded_ok <= 2, "{decoded_ok} noise buffers decoded as images");
}

#[test]
fn text_and_markup_are_unsupported_and_say_so() {
    let cases: [(&[u8], &str); 4] = [
        (b"<!DOCTYPE html>\n<html><head><title>404</title></head></html>\n", "HTML"),
        (b"<html><body>Not Found</body></html>", "HTML"),
        (b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>", "SVG"),
        (b"<svg width=\"10\" height=\"10\"></svg>", "SVG"),
    ];
    for (bytes, word) in cases {
        let msg = expect_unsupported(bytes, word);
        assert!(msg.contains(word), "message for {word} should say so: {msg}");
    }
    // Plain text: unsupported, and the message still says what would have been accepted.
    let msg = expect_unsupported(b"hello, this is just some text\n", "text");
    assert!(msg.contains("JPEG"), "{msg}");
    // Too short to be anything.
    let msg = expect_unsupported(b"\xFF\xD8", "two bytes");
    assert!(msg.contains("short"), "{msg}");
}

#[test]
fn other_image_and_document_formats_are_unsupported_and_named() {
    let mut avif = Vec::new();
    avif.extend_from_slice(&0x1Cu32.to_be_bytes());
    avif.extend_from_slice(b"ftypavif\0\0\0\0avifmif1miaf");
    avif.extend_from_slice(&[0, 0, 0, 8]);
    avif.extend_from_slice(b"meta");
    let mut heic = Vec::new();
    heic.extend_from_slice(&0x18u32.to_be_bytes());
    heic.extend_from_slice(b"ftypheic\0\0\0\0mif1heic");
    let mut heix = heic.clone();
    heix[11] = b'x';
    let mut mp4 = Vec::new();
    mp4.extend_from_slice(&0x18u32.to_be_bytes());
    mp4.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
    let pdf: &[u8] = b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n";
    let cases: [(&[u8], &str); 5] =
        [(&avif, "AVIF"), (&heic, "HEIC"), (&heix, "HEIC"), (&mp4, "ISO media"), (pdf, "PDF")];
    for (bytes, word) in cases {
        let msg = expect_unsupported(bytes, word);
        assert!(msg.contains(word), "message for {word} should name it: {msg}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Truncated files
// ---------------------------------------------------------------------------------------------------------

#[test]
fn truncated_jpeg_is_a_decode_error() {
    let (w, h) = (96, 64);
    let jpeg = encode_jpeg(w, h, &synthetic_rgb(w, h, 1));
    assert_eq!(&jpeg[jpeg.len() - 2..], b"\xFF\xD9", "encoder output should end with EOI");
    let full = decode(&jpeg, &opts()).expect("the intact JPEG decodes");
    assert_eq!((full.width, full.height), (w, h));

    let scan = jpeg_scan_start(&jpeg);
    // Every marker segment before the scan, cut at its marker and in its middle.
    let mut cuts = vec![(3, "SOI and one byte".to_string())];
    for (at, len, marker) in jpeg_segments(&jpeg) {
        if at >= 3 {
            cuts.push((at, format!("just before marker {marker:02X}")));
        }
        cuts.push((at + 2 + len / 2, format!("inside marker {marker:02X}")));
    }
    cuts.extend([
        (scan, "all headers, no scan data".to_string()),
        (scan + 1, "one byte of scan data".to_string()),
        (scan + (jpeg.len() - scan) / 2, "half of the scan data".to_string()),
        (jpeg.len() - 12, "missing the last scan bytes and EOI".to_string()),
        (jpeg.len() - 3, "missing the last scan byte and EOI".to_string()),
        // Missing only EOI: libjpeg reports "Premature end of JPEG file" when it looks for the EOI marker,
        // and Pillow (the reference) refuses this file too ("image file is truncated"), so there is no
        // reference hash for it: it must be an error, not a hash of a file partners could not hash.
        (jpeg.len() - 2, "missing EOI".to_string()),
        (jpeg.len() - 1, "missing the last byte of EOI".to_string()),
    ]);
    let cuts: Vec<(usize, &str)> = cuts.iter().map(|(c, w)| (*c, w.as_str())).collect();
    check_cuts(&jpeg, &cuts, "JPEG");
}

#[test]
fn truncated_png_is_a_decode_error() {
    let (w, h) = (96, 64);
    let rgb = synthetic_rgb(w, h, 2);
    let png = encode_png(w, h, &rgb);
    let full = decode(&png, &opts()).expect("the intact PNG decodes");
    assert_eq!(full.to_rgb().as_ref(), &rgb[..], "lossless round trip");
    let iend = png.len() - 12;
    assert_eq!(&png[iend + 4..iend + 8], b"IEND");
    let cuts = [
        (8, "signature only"),
        (20, "inside IHDR"),
        (33, "signature and IHDR, no image data"),
        (41, "the first IDAT's header only"),
        (png.len() / 2, "half-way"),
        // IEND (12), the IDAT CRC (4), the zlib Adler-32 (4) and 16 bytes of deflate data gone: pixels are
        // missing, which Pillow reports as "image file is truncated".
        (iend - 4 - 4 - 16, "missing the end of the compressed data"),
    ];
    check_cuts(&png, &cuts, "PNG");
}

#[test]
fn png_missing_only_iend_is_the_full_image_or_a_decode_error() {
    // Pillow stops reading after the image data when the trailing chunks are missing and keeps the image,
    // so the reference has a hash for this file: the intact file's. Such a recoverable file is not required
    // to decode here, but if it does it must be the whole image, and if not, a typed decode error.
    let (w, h) = (96, 64);
    let rgb = synthetic_rgb(w, h, 3);
    let png = encode_png(w, h, &rgb);
    match decode_both(&png[..png.len() - 12], &opts()) {
        Ok((img, rec)) => {
            assert_eq!(img.to_rgb().as_ref(), &rgb[..]);
            assert_eq!(rec, hash_of(&png));
        }
        Err(Error::Decode { reason, .. }) => {
            println!("note: a PNG missing only IEND is refused ({reason}); Pillow accepts it")
        }
        Err(e) => panic!("PNG without IEND: unexpected error kind {e:?}"),
    }
}

/// Decodes on a new thread, so per-thread decoder state left by earlier inputs plays no part.
fn decode_on_fresh_thread(bytes: &[u8]) -> Result<Decoded, Error> {
    std::thread::scope(|s| s.spawn(|| decode(bytes, &opts())).join().expect("decode panicked"))
}

#[test]
fn fatal_jpeg_error_after_a_benign_warning_is_still_an_error() {
    // libjpeg reports "extraneous bytes before marker" as a warning and Pillow keeps such an image; a JPEG
    // whose frame header points a component at a quantisation table that was never defined is a fatal
    // error ("Quantization table 0x03 was not defined"), which Pillow refuses. Both together must still be
    // refused: one warning earlier in the stream must not turn the fatal error into a benign one.
    let (w, h) = (64, 48);
    let clean = encode_jpeg(w, h, &synthetic_rgb(w, h, 12));
    let dht = jpeg_segment(&clean, |m| m == 0xC4).expect("DHT");
    let sof = jpeg_segment(&clean, |m| matches!(m, 0xC0..=0xC2)).expect("SOF");
    let with_extraneous = |b: &[u8]| [&b[..dht], &[0u8, 0], &b[dht..]].concat();
    let mut undefined_table = clean.clone();
    assert!(undefined_table[sof + 12] < 2, "component 1 uses table 0 or 1");
    undefined_table[sof + 12] = 3;

    let intact = decode_on_fresh_thread(&clean).expect("clean JPEG");
    let benign = decode_on_fresh_thread(&with_extraneous(&clean));
    assert!(
        benign.as_ref().ok() == Some(&intact),
        "extraneous bytes before a marker: Pillow keeps the image; got {:?}",
        benign.map(|_| ())
    );
    for (bytes, what) in [
        (undefined_table.clone(), "undefined quantisation table"),
        (with_extraneous(&undefined_table), "extraneous bytes, then an undefined quantisation table"),
    ] {
        match decode_on_fresh_thread(&bytes) {
            Err(Error::Decode { .. }) => {}
            Err(e) => panic!("{what}: expected Error::Decode, got {e:?}"),
            Ok(d) => {
                let zeros = d.to_rgb().iter().filter(|&&b| b == 0).count();
                panic!("{what}: expected Error::Decode, got an image {d:?} ({zeros} of its samples are 0)")
            }
        }
    }
}

#[test]
fn jpeg_with_garbage_after_eoi_decodes_to_the_same_pixels() {
    let (w, h) = (80, 56);
    let jpeg = encode_jpeg(w, h, &synthetic_rgb(w, h, 4));
    let clean = decode(&jpeg, &opts()).expect("intact JPEG");
    let mut rng = Rng(0x5EED_0004);
    for tail in [rng.bytes(1), rng.bytes(1000), vec![0u8; 64], b"\xFF\xD8\xFF\xE0 another header".to_vec()] {
        let mut bytes = jpeg.clone();
        bytes.extend_from_slice(&tail);
        let (img, rec) = decode_both(&bytes, &opts())
            .unwrap_or_else(|e| panic!("{} bytes after EOI: {e:?} ({e})", tail.len()));
        assert!(img == clean, "{} bytes after EOI changed the pixels", tail.len());
        assert_eq!(rec, hash_of(&jpeg));
    }
}

#[test]
fn damaged_jpeg_whose_last_row_is_black_still_decodes() {
    // A stream with a benign warning decodes to the full image. Whether libjpeg got to the end is told from
    // the last row it wrote; a black last row looks like one it never wrote, so it must still be accepted
    // (and give the same pixels as the undamaged stream).
    let (w, h) = (64, 48);
    let mut rgb = synthetic_rgb(w, h, 16);
    rgb[(w * (h - 16) * 3) as usize..].fill(0);
    let clean = encode_jpeg(w, h, &rgb);
    let intact = decode_on_fresh_thread(&clean).expect("clean JPEG");
    let last_row = &intact.to_rgb()[(w * (h - 1) * 3) as usize..];
    assert!(last_row.iter().all(|&b| b == 0), "precondition: the decoded last row is black");
    let dht = jpeg_segment(&clean, |m| m == 0xC4).expect("DHT");
    let damaged = [&clean[..dht], &[0u8, 0, 0], &clean[dht..]].concat();
    let got = decode_on_fresh_thread(&damaged);
    assert!(got.as_ref().ok() == Some(&intact), "extraneous bytes, black last row: {:?}", got.map(|_| ()));
}

#[test]
fn jpeg_followed_by_a_cut_off_second_jpeg_decodes_to_the_first_image() {
    // Files with something appended after the end-of-image marker are common (a preview, a video clip in
    // "motion photos", another tool's trailer), and the appended bytes can contain anything, including a
    // start-of-scan marker with no end-of-image after it. libjpeg and Pillow stop at the first EOI and keep
    // the image; whether the image was complete must not depend on bytes after it.
    let (w, h) = (80, 56);
    let jpeg = encode_jpeg(w, h, &synthetic_rgb(w, h, 13));
    let clean = decode(&jpeg, &opts()).expect("intact JPEG");
    let other = encode_jpeg(32, 32, &synthetic_rgb(32, 32, 14));
    let cut_second = &other[..jpeg_scan_start(&other) + 40];
    for (tail, what) in [
        (cut_second.to_vec(), "a second JPEG cut inside its scan data"),
        (
            [&b"trailer"[..], &[0xFF, 0xDA, 0x00, 0x08], &[7u8; 40]].concat(),
            "bytes FF DA in a binary trailer",
        ),
    ] {
        let bytes = [&jpeg[..], &tail].concat();
        match decode_both(&bytes, &opts()) {
            Ok((img, rec)) => {
                assert!(img == clean, "{what} after EOI changed the pixels");
                assert_eq!(rec, hash_of(&jpeg), "{what}");
            }
            Err(e) => panic!("{what} after EOI: expected the first image, got {e:?} ({e})"),
        }
    }
}

#[test]
fn jpeg_cut_inside_a_segment_after_its_scan_is_truncated_even_after_a_warning() {
    // A stream whose last marker segment (here a comment after the scan, holding the bytes FF D9) is cut
    // short: libjpeg runs out of data, warns "Premature end of JPEG file" and carries on, and Pillow refuses
    // the file as truncated. libjpeg keeps the text of the *first* warning only, so when an earlier, benign
    // warning (extraneous bytes before a marker) comes first, a decision taken from the warning's text sees
    // "Corrupt JPEG data: ..." and accepts the truncated file. The answer must be "truncated" either way.
    let (w, h) = (64, 48);
    let clean = encode_jpeg(w, h, &synthetic_rgb(w, h, 15));
    assert_eq!(&clean[clean.len() - 2..], b"\xFF\xD9");
    let dht = jpeg_segment(&clean, |m| m == 0xC4).expect("DHT");
    let with_extraneous = [&clean[..dht], &[0u8, 0], &clean[dht..]].concat();
    let intact = decode_on_fresh_thread(&clean).expect("clean JPEG");
    assert!(
        decode_on_fresh_thread(&with_extraneous).ok() == Some(intact),
        "extraneous bytes alone are benign"
    );

    // A comment segment declaring 256 bytes, of which only 8 arrive (they contain FF D9).
    let cut_comment = |b: &[u8]| {
        let body = &b[..b.len() - 2];
        [body, &[0xFF, 0xFE, 0x01, 0x00], b"ab\xFF\xD9cdef"].concat()
    };
    let mut failures = Vec::new();
    for (bytes, what) in [
        (cut_comment(&clean), "cut inside a trailing comment"),
        (cut_comment(&with_extraneous), "extraneous bytes, then cut inside a trailing comment"),
    ] {
        match decode_on_fresh_thread(&bytes) {
            Err(Error::Decode { reason, .. }) if reason.starts_with("truncated (") => {}
            Err(e) => failures.push(format!("{what}: expected Error::Decode \"truncated (...)\", got {e:?}")),
            Ok(d) => failures.push(format!("{what}: expected a truncation error, got an image {d:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------------------
// Limits, checked from the header
// ---------------------------------------------------------------------------------------------------------

#[test]
fn png_header_claiming_100000_squared_is_too_large() {
    let small = encode_png(16, 16, &synthetic_rgb(16, 16, 5));
    let huge = patch_png_size(&small, 100_000, 100_000);
    let (what, value, limit) = expect_too_large(&huge, &opts(), "PNG 100000x100000");
    assert!(matches!(what, Limit::Width | Limit::Pixels), "{what:?}");
    assert!(value > limit, "value {value} should exceed limit {limit}");
    // Within each side limit but far beyond the pixel limit.
    let wide = patch_png_size(&small, 30_000, 30_000);
    let (what, value, limit) = expect_too_large(&wide, &opts(), "PNG 30000x30000");
    assert_eq!((what, value, limit), (Limit::Pixels, 900_000_000, Limits::default().max_pixels));
    // Only the height too large.
    let tall = patch_png_size(&small, 10, 40_000);
    let (what, value, _) = expect_too_large(&tall, &opts(), "PNG 10x40000");
    assert_eq!((what, value), (Limit::Height, 40_000));
}

#[test]
fn jpeg_frame_header_claiming_65000_squared_is_too_large() {
    let small = encode_jpeg(16, 16, &synthetic_rgb(16, 16, 6));
    let huge = patch_jpeg_size(&small, 65_000, 65_000);
    let (what, value, limit) = expect_too_large(&huge, &opts(), "JPEG 65000x65000");
    assert!(matches!(what, Limit::Width | Limit::Pixels), "{what:?}");
    assert!(value > limit);
    let wide = patch_jpeg_size(&small, 30_000, 30_000);
    let (what, value, _) = expect_too_large(&wide, &opts(), "JPEG 30000x30000");
    assert_eq!((what, value), (Limit::Pixels, 900_000_000));
}

#[test]
fn gif_logical_screen_of_65535_squared_is_too_large() {
    let huge = gif_screen_with_tiny_frame(65_535, 65_535);
    let (what, value, limit) = expect_too_large(&huge, &opts(), "GIF 65535x65535");
    assert!(matches!(what, Limit::Width | Limit::Pixels), "{what:?}");
    assert!(value > limit);
    let wide = gif_screen_with_tiny_frame(20_000, 20_000);
    let (what, value, _) = expect_too_large(&wide, &opts(), "GIF 20000x20000");
    assert_eq!((what, value), (Limit::Pixels, 400_000_000));
    // Sanity: the same construction with a small screen is a valid image, so the errors above come from the
    // declared size and nothing else.
    let (img, _) = decode_both(&gif_screen_with_tiny_frame(7, 5), &opts()).expect("7x5 GIF");
    assert_eq!((img.width, img.height), (7, 5));
}

#[test]
fn gif_frame_larger_than_the_limits_inside_a_small_screen_is_refused() {
    // The logical screen passes the limits, but the first frame's descriptor claims 20000x20000 (400 Mpx,
    // four times the default pixel limit) with a few bytes of data. Whatever the outcome, it must be a typed
    // answer; see alloc_limits.rs for the memory side.
    let mut gif = encode_gif(16, 16, &[]);
    gif.pop(); // trailer
    let (fw, fh) = (20_000u16.to_le_bytes(), 20_000u16.to_le_bytes());
    gif.extend_from_slice(&[0x2C, 0, 0, 0, 0, fw[0], fw[1], fh[0], fh[1], 0, 8, 2, 0x4C, 0x01, 0, 0x3B]);
    match decode_both(&gif, &opts()) {
        Err(Error::Decode { .. } | Error::TooLarge { .. }) => {}
        Err(e) => panic!("unexpected error kind {e:?}"),
        Ok((img, _)) => assert_eq!((img.width, img.height), (16, 16), "the canvas is the logical screen"),
    }
}

#[test]
fn custom_limits_reject_a_normal_image() {
    let (w, h) = (64u32, 48u32);
    let rgb = synthetic_rgb(w, h, 7);
    let indices: Vec<u8> = rgb.chunks_exact(3).map(|p| p[0]).collect();
    let files = [
        ("png", encode_png(w, h, &rgb)),
        ("jpeg", encode_jpeg(w, h, &rgb)),
        ("gif", encode_gif(w as u16, h as u16, &[indices])),
        ("bmp", encode_with(w, h, &rgb, image::ImageFormat::Bmp)),
        ("tiff", encode_with(w, h, &rgb, image::ImageFormat::Tiff)),
        ("webp", encode_with(w, h, &rgb, image::ImageFormat::WebP)),
    ];
    let pixels = u64::from(w * h);
    let mut failures = Vec::new();
    for (name, bytes) in &files {
        // Sanity: accepted under the defaults and under limits exactly at its size.
        let exact = Limits { max_bytes: bytes.len() as u64, max_width: w, max_height: h, max_pixels: pixels };
        for (limits, label) in [(Limits::default(), "default limits"), (exact, "limits exactly at its size")]
        {
            if let Err(e) = decode_both(bytes, &with_limits(limits)) {
                failures.push(format!("{name} under {label}: {e:?}"));
            }
        }
        let len = bytes.len() as u64;
        let cases = [
            (Limits { max_pixels: pixels - 1, ..Limits::default() }, (Limit::Pixels, pixels, pixels - 1)),
            (Limits { max_width: w - 1, ..Limits::default() }, (Limit::Width, w.into(), (w - 1).into())),
            (Limits { max_height: h - 1, ..Limits::default() }, (Limit::Height, h.into(), (h - 1).into())),
            (Limits { max_bytes: len - 1, ..Limits::default() }, (Limit::Bytes, len, len - 1)),
        ];
        for (limits, want) in cases {
            match decode_both(bytes, &with_limits(limits)) {
                Err(Error::TooLarge { what, value, limit }) if (what, value, limit) == want => {
                    let msg = decode(bytes, &with_limits(limits)).unwrap_err().to_string();
                    if !(msg.contains(&want.1.to_string()) && msg.contains(&want.2.to_string())) {
                        failures.push(format!("{name}: message should give value and limit: {msg}"));
                    }
                }
                Err(e) => failures
                    .push(format!("{name} over the {:?} limit: want TooLarge {want:?}, got {e:?}", want.0)),
                Ok((d, _)) => failures.push(format!("{name} over the {:?} limit: decoded {d:?}", want.0)),
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------------------
// Degenerate sizes
// ---------------------------------------------------------------------------------------------------------

#[test]
fn images_under_five_pixels_a_side_hash_to_zero_pdq_with_quality_zero() {
    // Meta's reference returns an all-zero hash with quality 0 when a side is below MIN_HASHABLE_DIM (5).
    for (w, h) in [(4u32, 4u32), (1, 1), (4, 100), (100, 4), (2, 3)] {
        let rgb = synthetic_rgb(w, h, 8);
        let png = encode_png(w, h, &rgb);
        let (img, rec) = decode_both(&png, &opts()).unwrap_or_else(|e| panic!("{w}x{h}: {e:?} ({e})"));
        assert_eq!((img.width, img.height, rec.width, rec.height), (w, h, w, h));
        assert_eq!(img.to_rgb().as_ref(), &rgb[..], "{w}x{h} pixels");
        assert_eq!(rec.pdq.hash, Hash256::default(), "{w}x{h}: PDQ should be all zeros");
        assert_eq!(rec.pdq.quality, 0, "{w}x{h}: quality should be 0");
        let dih = rec.dihedral.expect("asked for dihedral");
        assert!(dih.named().iter().all(|(_, h)| *h == Hash256::default()), "{w}x{h}: dihedral not zero");
        // pHash is defined for any size (imagehash resizes to 32x32 first); it must be the one the hasher
        // computes on these pixels.
        let view = ImageView::rgb(w, h, &rgb);
        assert_eq!(rec.phash, PhashHasher::new().hash(view), "{w}x{h} pHash");
    }
}

#[test]
fn five_pixels_a_side_is_hashed_normally() {
    // The other side of the boundary, so the zero answer above is the threshold and not a broken hasher.
    let (w, h) = (5u32, 64u32);
    let rgb = synthetic_rgb(w, h, 9);
    let rec = hash_of(&encode_png(w, h, &rgb));
    assert_ne!(rec.pdq.hash, Hash256::default());
    assert_eq!(rec.pdq, PdqHasher::new().hash(ImageView::rgb(w, h, &rgb)));
}

#[test]
fn one_pixel_wide_and_one_pixel_high_images_hash_without_panicking() {
    for (w, h) in [(1u32, 300u32), (300, 1), (1, 2000), (2000, 1)] {
        let rgb = synthetic_rgb(w, h, 10);
        for (name, bytes) in [("png", encode_png(w, h, &rgb)), ("jpeg", encode_jpeg(w, h, &rgb))] {
            let (img, rec) =
                decode_both(&bytes, &opts()).unwrap_or_else(|e| panic!("{name} {w}x{h}: {e:?} ({e})"));
            assert_eq!((img.width, img.height), (w, h));
            assert_eq!((rec.pdq.hash, rec.pdq.quality), (Hash256::default(), 0), "{name} {w}x{h}");
        }
    }
}

#[test]
fn zero_sized_headers_are_decode_errors() {
    let small = encode_png(8, 8, &synthetic_rgb(8, 8, 11));
    for (w, h) in [(0, 8), (8, 0), (0, 0)] {
        let e = decode(&patch_png_size(&small, w, h), &opts()).expect_err("zero-sized PNG");
        assert!(matches!(e, Error::Decode { .. }), "PNG {w}x{h}: {e:?}");
    }
    let jpeg = encode_jpeg(8, 8, &synthetic_rgb(8, 8, 11));
    for (w, h) in [(0, 8), (8, 0)] {
        let e = decode(&patch_jpeg_size(&jpeg, w, h), &opts()).expect_err("zero-sized JPEG");
        assert!(matches!(e, Error::Decode { .. }), "JPEG {w}x{h}: {e:?}");
    }
    let gif = encode_gif(0, 0, &[]);
    let e = decode(&gif, &opts()).expect_err("zero-sized GIF");
    assert!(matches!(e, Error::Decode { .. }), "GIF 0x0: {e:?}");
}

// ---------------------------------------------------------------------------------------------------------
// Animation
// ---------------------------------------------------------------------------------------------------------

#[test]
fn gif_first_frame_beyond_the_logical_screen_enlarges_the_canvas_like_pillow() {
    // Pillow (GifImagePlugin._seek) makes the image cover the first frame when the frame extends past the
    // logical screen: size = (max(screen w, left + frame w), max(screen h, top + frame h)), checked against
    // its decompression-bomb limit; the area the frame does not cover gets index 0 (no transparency here).
    let palette: Vec<u8> = (0..=255u8).flat_map(|i| [i, i, i]).collect();
    let cases = [
        ((16u16, 16u16), (10u16, 4u16), (16u16, 16u16)),
        ((16, 16), (0, 0), (32, 24)),
        ((8, 30), (3, 0), (4, 4)),
    ];
    for ((sw, sh), (left, top), (fw, fh)) in cases {
        let indices: Vec<u8> =
            (0..u32::from(fw) * u32::from(fh)).map(|i| 50 + (i * 37 % 200) as u8).collect();
        let mut bytes = Vec::new();
        {
            let mut enc = gif::Encoder::new(&mut bytes, sw, sh, &palette).expect("gif encoder");
            let mut frame = gif::Frame::from_indexed_pixels(fw, fh, indices.clone(), None);
            (frame.left, frame.top) = (left, top);
            enc.write_frame(&frame).expect("frame");
        }
        let (cw, ch) = (sw.max(left + fw), sh.max(top + fh));
        let label = format!("{sw}x{sh} screen, {fw}x{fh} frame at ({left},{top})");
        let (img, _) = decode_both(&bytes, &opts()).unwrap_or_else(|e| panic!("{label}: {e:?}"));
        assert_eq!((img.width, img.height), (u32::from(cw), u32::from(ch)), "{label}: canvas size");
        let rgb = img.to_rgb();
        for y in 0..ch {
            for x in 0..cw {
                let inside = (left..left + fw).contains(&x) && (top..top + fh).contains(&y);
                let want = if inside { indices[usize::from((y - top) * fw + (x - left))] } else { 0 };
                let at = (usize::from(y) * usize::from(cw) + usize::from(x)) * 3;
                assert_eq!(rgb[at..at + 3], [want; 3], "{label}: pixel ({x},{y})");
            }
        }
    }
}

#[test]
fn animated_gif_hashes_its_first_frame() {
    let (w, h) = (64u16, 48u16);
    let first = grey_pattern(w, h, false);
    let second = grey_pattern(w, h, true);
    let animated = encode_gif(w, h, &[first.clone(), second.clone()]);
    let only_first = encode_gif(w, h, std::slice::from_ref(&first));
    let only_second = encode_gif(w, h, &[second]);

    let (img, rec) = decode_both(&animated, &opts()).expect("animated GIF");
    let expected_rgb: Vec<u8> = first.iter().flat_map(|&g| [g, g, g]).collect();
    assert_eq!(img.to_rgb().as_ref(), &expected_rgb[..], "the first frame's pixels");
    let a = hash_of(&only_first);
    let b = hash_of(&only_second);
    assert_ne!(a.pdq.hash, b.pdq.hash, "test frames must hash differently for this test to mean anything");
    assert_eq!(rec, a, "animated GIF must hash like its first frame alone");
    assert_ne!(rec.pdq.hash, b.pdq.hash);
    assert_ne!(rec.phash, b.phash);

    // Three frames, the last two identical to the first's successor: still the first frame.
    let longer = encode_gif(w, h, &[first.clone(), grey_pattern(w, h, true), grey_pattern(w, h, true)]);
    assert_eq!(hash_of(&longer), a);
}
