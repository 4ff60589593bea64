//! Inputs of the benchmarks: a corpus read into memory, or generated images of chosen sizes, and generated
//! PDQ / pHash banks with queries.
//!
//! Generated images are [`photo_like_rgb`] pixels (smooth colour waves plus pixel noise, about as costly to
//! decode as a photo), encoded once as JPEG (libjpeg-turbo, quality 90, 4:2:0, the usual camera/web
//! settings) or PNG. Files are read (or encoded)
//! before timing starts, so no measurement includes the disk. Image bytes never go to logs.

use super::{parse_size, Param};
use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use pharos::image::{decode, DecodeOptions, Decoded};
use pharos::matcher::{AnyHash, Index, Kind, MihIndex, Query};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "jpe", "jfif", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Where the images come from (decode, hash, pipeline).
#[derive(Args, Debug, Clone)]
pub(crate) struct Source {
    /// Measure on every image under DIR (recursive; read into memory before timing).
    #[arg(long, value_name = "DIR", conflicts_with = "size")]
    pub(crate) corpus: Option<PathBuf>,
    /// Generated images of this size, WIDTHxHEIGHT (e.g. 256x256, 1280x800 for 1 MP, 4000x3000 for 12 MP);
    /// repeat or comma-separate to sweep [default: 1280x800].
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    pub(crate) size: Vec<(u32, u32)>,
}

/// How generated images are encoded.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// JPEG, quality 90, 4:2:0 chroma (libjpeg-turbo).
    Jpeg,
    /// PNG (lossless; far slower to decode per pixel than JPEG).
    Png,
}

impl Format {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
        }
    }
}

/// A set of encoded images measured together: the corpus, or copies of one generated image.
pub(crate) struct ImageSet {
    /// "corpus" or "WxH".
    pub(crate) name: String,
    /// Megapixels of one image for a generated set (the chart position); `None` for a corpus.
    pub(crate) megapixels: Option<f64>,
    /// Encoded files, in memory.
    pub(crate) files: Vec<Arc<[u8]>>,
    /// Total pixels of all files (from decoding them once).
    pub(crate) pixels: u64,
    /// Files that did not decode (left out of `files`).
    pub(crate) skipped: usize,
}

impl ImageSet {
    /// The set as the `input` parameter of a result (charted at its megapixels for generated sets).
    pub(crate) fn param(&self) -> Param {
        match self.megapixels {
            Some(mp) => Param::axis("size", self.name.clone(), mp),
            None => Param::new("size", self.name.clone()),
        }
    }

    /// Average megapixels per image.
    pub(crate) fn mean_megapixels(&self) -> f64 {
        self.pixels as f64 / 1e6 / self.files.len().max(1) as f64
    }

    /// Decodes every file (the hash benchmarks start from pixels).
    pub(crate) fn decode_all(&self) -> anyhow::Result<Vec<Decoded>> {
        use rayon::prelude::*;
        self.files
            .par_iter()
            .enumerate()
            .map(|(i, b)| {
                decode(b, &DecodeOptions::default()).with_context(|| format!("{}: image {i}", self.name))
            })
            .collect()
    }
}

/// The sets a [`Source`] names: the corpus, or one set per `--size` (default 1280x800) of `copies` images.
pub(crate) fn image_sets(src: &Source, format: Format, copies: usize) -> anyhow::Result<Vec<ImageSet>> {
    if let Some(dir) = &src.corpus {
        return Ok(vec![load_corpus(dir)?]);
    }
    let sizes = if src.size.is_empty() { vec![(1280, 800)] } else { src.size.clone() };
    sizes.iter().map(|&(w, h)| generated(w, h, format, copies)).collect()
}

/// Reads every image file under `dir` into memory; files that do not decode are left out (and counted).
pub(crate) fn load_corpus(dir: &Path) -> anyhow::Result<ImageSet> {
    if !dir.is_dir() {
        bail!("--corpus {}: not a directory", dir.display());
    }
    let mut paths = Vec::new();
    walk(dir, &mut paths).with_context(|| format!("listing {}", dir.display()))?;
    if paths.is_empty() {
        bail!("--corpus {}: no image files (extensions {})", dir.display(), IMAGE_EXTENSIONS.join(", "));
    }
    let mut files: Vec<Arc<[u8]>> = Vec::with_capacity(paths.len());
    for p in &paths {
        files.push(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?.into());
    }
    let (mut kept, mut pixels, mut skipped) = (Vec::with_capacity(files.len()), 0u64, 0);
    for f in files {
        match decode(&f, &DecodeOptions::default()) {
            Ok(img) => {
                pixels += u64::from(img.width) * u64::from(img.height);
                kept.push(f);
            }
            Err(_) => skipped += 1,
        }
    }
    if kept.is_empty() {
        bail!("--corpus {}: none of the {} image files decodes", dir.display(), paths.len());
    }
    if skipped > 0 {
        eprintln!(
            "bench: {skipped} of {} files under {} do not decode; left out",
            paths.len(),
            dir.display()
        );
    }
    eprintln!(
        "bench: corpus {}: {} images, {:.1} megapixels, {:.1} MB encoded",
        dir.display(),
        kept.len(),
        pixels as f64 / 1e6,
        kept.iter().map(|f| f.len()).sum::<usize>() as f64 / 1e6
    );
    Ok(ImageSet { name: "corpus".into(), megapixels: None, files: kept, pixels, skipped })
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// `copies` copies of one generated `w`×`h` image, encoded as `format`.
pub(crate) fn generated(w: u32, h: u32, format: Format, copies: usize) -> anyhow::Result<ImageSet> {
    let pixels = photo_like_rgb(w, h);
    let bytes: Arc<[u8]> = match format {
        Format::Jpeg => encode_jpeg(&pixels, w, h, 90)?,
        Format::Png => encode_png(&pixels, w, h)?,
    }
    .into();
    let copies = copies.max(1);
    Ok(ImageSet {
        name: format!("{w}x{h}"),
        megapixels: Some(f64::from(w) * f64::from(h) / 1e6),
        files: vec![bytes; copies],
        pixels: u64::from(w) * u64::from(h) * copies as u64,
        skipped: 0,
    })
}

/// Pixels for generated files: smooth colour waves at frequencies fixed per image (as a photo's content does
/// not get busier with more pixels) plus ±4 levels of pixel noise. As JPEG at quality 90 this takes about
/// 2.0 bits per pixel at 640x480, 1.6 at 1280x800 and 1.25 at 4000x3000, near the shared corpus' JPEGs
/// (1.1 on average), so decoding costs about what a photo's does. (`synthetic_rgb`, which the hash benches
/// use, is a high-frequency pattern: about 7 bits per pixel as JPEG, far costlier to decode than a photo.)
pub(crate) fn photo_like_rgb(w: u32, h: u32) -> Vec<u8> {
    use std::f32::consts::TAU;
    const WAVES: [(f32, f32, f32); 3] = [(3.0, 2.0, 0.0), (5.0, 3.0, 1.0), (2.0, 7.0, 2.0)];
    let mut px = Vec::with_capacity(w as usize * h as usize * 3);
    for yi in 0..h {
        let y = yi as f32 / h as f32;
        let band = (TAU * 29.0 * y).sin();
        for xi in 0..w {
            let x = xi as f32 / w as f32;
            let mut z = (u64::from(xi).wrapping_mul(0x9e37_79b1) ^ u64::from(yi).wrapping_mul(0x85eb_ca77))
                & 0xffff_ffff;
            z = ((z ^ (z >> 15)).wrapping_mul(0x2c1b_3c6d)) & 0xffff_ffff;
            let noise = ((z >> 8) % 9) as f32 - 4.0;
            for (a, b, p) in WAVES {
                let v = 128.0
                    + 50.0 * (TAU * (a * x + b * y) + p).sin()
                    + 30.0 * (TAU * 17.0 * x * y + p).sin()
                    + 20.0 * (TAU * 41.0 * x + p).cos() * band
                    + noise;
                px.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }
    px
}

/// RGB → JPEG with libjpeg-turbo (the vendored library the decoder uses).
fn encode_jpeg(rgb: &[u8], w: u32, h: u32, quality: i32) -> anyhow::Result<Vec<u8>> {
    use turbojpeg_sys as tj;
    assert_eq!(rgb.len(), w as usize * h as usize * 3);
    // SAFETY: tj3Init has no preconditions; a null return is handled.
    let handle = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_COMPRESS as libc::c_int) };
    if handle.is_null() {
        bail!("cannot initialise libjpeg-turbo's compressor");
    }
    // SAFETY: `handle` is live; known parameters.
    unsafe {
        tj::tj3Set(handle, tj::TJPARAM_TJPARAM_QUALITY as libc::c_int, quality);
        tj::tj3Set(handle, tj::TJPARAM_TJPARAM_SUBSAMP as libc::c_int, tj::TJSAMP_TJSAMP_420 as libc::c_int);
    }
    let mut buf: *mut libc::c_uchar = std::ptr::null_mut();
    let mut size: tj::size_t = 0;
    // SAFETY: `rgb` holds w*h*3 bytes (asserted); TurboJPEG allocates `buf` (tj3Alloc) and sets `size`.
    let rc = unsafe {
        tj::tj3Compress8(
            handle,
            rgb.as_ptr(),
            w as libc::c_int,
            0,
            h as libc::c_int,
            tj::TJPF_TJPF_RGB as libc::c_int,
            &mut buf,
            &mut size,
        )
    };
    let out = if rc == 0 && !buf.is_null() {
        // SAFETY: on success `buf` points to `size` initialised bytes.
        Ok(unsafe { std::slice::from_raw_parts(buf, size as usize) }.to_vec())
    } else {
        Err(anyhow::anyhow!("libjpeg-turbo could not encode a {w}x{h} image"))
    };
    // SAFETY: `buf` is null or was allocated by TurboJPEG; `handle` is destroyed once.
    unsafe {
        if !buf.is_null() {
            tj::tj3Free(buf.cast());
        }
        tj::tj3Destroy(handle);
    }
    out
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> anyhow::Result<Vec<u8>> {
    use image::ImageEncoder as _;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(rgb, w, h, image::ExtendedColorType::Rgb8)
        .context("encoding PNG")?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------
// Generated banks and queries
// ---------------------------------------------------------------------------------------------------------

/// The generator behind every generated bank and query.
pub(crate) use pharos::synth::SplitMix64 as Rng;

/// A generated bank (uniform random hashes) and its queries: half are bank entries with 0..=radius bits
/// flipped (hits), half fresh random hashes (misses).
pub(crate) struct Bank {
    pub(crate) index: Index,
    pub(crate) queries: Vec<Query>,
    pub(crate) build_seconds: f64,
}

/// Generates and indexes a bank of `n` hashes of `kind`, and `queries` queries.
pub(crate) fn bank(kind: Kind, n: usize, queries: usize, radius: u32, seed: u64) -> Bank {
    let mut rng = Rng::new(seed ^ n as u64);
    let bits = kind.bits();
    let start = std::time::Instant::now();
    let (index, sample): (Index, Vec<AnyHash>) = match kind {
        Kind::Pdq => {
            let rows: Vec<[u64; 4]> =
                (0..n).map(|_| [rng.next_u64(), rng.next_u64(), rng.next_u64(), rng.next_u64()]).collect();
            let sample = (0..queries / 2)
                .map(|_| AnyHash::Pdq(pharos::hash::Hash256 { limbs: rows[rng.below(n as u64) as usize] }))
                .collect();
            (Index::Pdq(MihIndex::build(rows, &[])), sample)
        }
        Kind::Phash => {
            let rows: Vec<[u64; 1]> = (0..n).map(|_| [rng.next_u64()]).collect();
            let sample = (0..queries / 2)
                .map(|_| AnyHash::Phash(pharos::hash::Hash64(rows[rng.below(n as u64) as usize][0])))
                .collect();
            (Index::Phash(MihIndex::build(rows, &[])), sample)
        }
        k => unreachable!("bench match takes pdq or phash (parse_kind), not {k}"),
    };
    let build_seconds = start.elapsed().as_secs_f64();
    let mut qs: Vec<Query> = Vec::with_capacity(queries);
    for h in sample {
        let flips = rng.below(u64::from(radius.min(bits)) + 1);
        qs.push(vec![flip(h, flips, &mut rng)]);
    }
    while qs.len() < queries {
        qs.push(vec![random_hash(kind, &mut rng)]);
    }
    Bank { index, queries: qs, build_seconds }
}

/// A random hash of `kind`.
pub(crate) fn random_hash(kind: Kind, rng: &mut Rng) -> AnyHash {
    match kind {
        Kind::Pdq => AnyHash::Pdq(pharos::hash::Hash256 {
            limbs: [rng.next_u64(), rng.next_u64(), rng.next_u64(), rng.next_u64()],
        }),
        Kind::Phash => AnyHash::Phash(pharos::hash::Hash64(rng.next_u64())),
        Kind::Md5 => AnyHash::Md5(std::array::from_fn(|_| rng.next_u64() as u8)),
        Kind::Sha1 => AnyHash::Sha1(std::array::from_fn(|_| rng.next_u64() as u8)),
        Kind::Sha256 => AnyHash::Sha256(std::array::from_fn(|_| rng.next_u64() as u8)),
    }
}

fn flip(h: AnyHash, flips: u64, rng: &mut Rng) -> AnyHash {
    match h {
        AnyHash::Pdq(mut p) => {
            for _ in 0..flips {
                let b = rng.below(256) as usize;
                p.limbs[b / 64] ^= 1 << (b % 64);
            }
            AnyHash::Pdq(p)
        }
        AnyHash::Phash(mut p) => {
            for _ in 0..flips {
                p.0 ^= 1 << rng.below(64);
            }
            AnyHash::Phash(p)
        }
        digest => digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_jpegs_are_photo_sized_and_decode() {
        for (w, h) in [(640, 480), (1280, 800)] {
            let set = generated(w, h, Format::Jpeg, 2).unwrap();
            let bits_per_pixel = set.files[0].len() as f64 * 8.0 / (f64::from(w) * f64::from(h));
            assert!((1.0..3.0).contains(&bits_per_pixel), "{w}x{h}: {bits_per_pixel} bits per pixel");
            let img = decode(&set.files[0], &DecodeOptions::default()).unwrap();
            assert_eq!((img.width, img.height), (w, h));
            assert_eq!(set.pixels, 2 * u64::from(w) * u64::from(h));
        }
        let png = generated(64, 48, Format::Png, 1).unwrap();
        assert_eq!(decode(&png.files[0], &DecodeOptions::default()).unwrap().width, 64);
    }

    #[test]
    fn banks_have_hits_for_half_the_queries() {
        let b = bank(Kind::Pdq, 2000, 100, 31, 7);
        assert_eq!((b.index.len(), b.queries.len()), (2000, 100));
        let hits = b.index.search_batch(
            &b.queries,
            pharos::matcher::SearchOptions { radius: 31, method: pharos::matcher::Method::Scan },
        );
        assert!(hits[..50].iter().all(|h| !h.is_empty()));
    }
}
