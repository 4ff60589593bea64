//! Limits are checked from the header, before any pixel buffer exists.
//!
//! This test binary installs a counting global allocator and decodes inputs whose headers declare enormous
//! images in a few dozen bytes. Each must fail without any single allocation (or allocation attempt: a
//! `try_reserve` that the system refuses counts too) above [`MAX_ALLOC`], and without the bytes in use
//! growing by more than that. A positive control decodes a large-but-allowed image and checks the counter
//! does see its pixel buffer, so a broken counter cannot make the other tests pass.
//!
//! Only allocations made through Rust's global allocator are seen: libjpeg-turbo (C) calls `malloc`
//! directly. The JPEG pixel buffer itself is allocated on the Rust side, which is what matters here; the
//! limit check happens after `tj3DecompressHeader`, which only allocates libjpeg's small marker tables.

mod common;
use common::crc32;
use pharos::engine::{DecodeAndHash, HashOptions};
use pharos::hash::Hashers;
use pharos::image::{decode, DecodeOptions};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// The largest single allocation a refused input may cause.
const MAX_ALLOC: usize = 16 << 20;

struct Counting;

/// Largest single allocation (or reallocation target, or failed attempt) since the last reset.
static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// Bytes currently allocated.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
/// Highest value of `CURRENT` since the last reset.
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let now = CURRENT.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping only touches atomics and never
// allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Relaxed);
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Relaxed);
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Relaxed);
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counters are process-wide, so the tests in this binary take turns.
static SERIAL: Mutex<()> = Mutex::new(());

/// What one measured call allocated.
#[derive(Debug)]
struct Usage {
    largest: usize,
    growth: usize,
}

/// Runs `f` and reports the largest single allocation and the peak growth of bytes in use during it.
fn measure<T>(f: impl FnOnce() -> T) -> (T, Usage) {
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    LARGEST.store(0, Relaxed);
    let out = f();
    let usage = Usage { largest: LARGEST.load(Relaxed), growth: PEAK.load(Relaxed).saturating_sub(base) };
    (out, usage)
}

/// Decodes `bytes` through `image::decode` and through `Hashers::hash_bytes` (with a fresh, empty
/// `Hashers`, whose scratch space is small), requires both to refuse it, and checks what that cost.
/// (Which error it must be, `TooLarge`, is checked in `bad_input.rs`; this binary is about memory.)
fn refused_cheaply(bytes: &[u8], what: &str) {
    let opts = DecodeOptions::default();
    let (r1, u1) = measure(|| decode(bytes, &opts).map(|d| (d.width, d.height)));
    let mut hashers = Hashers::new();
    let hash_opts = HashOptions { decode: opts, dihedral: true, exact: false };
    let (r2, u2) = measure(|| hashers.hash_bytes(bytes, &hash_opts).map(|r| (r.width, r.height)));
    for (entry, result, usage) in [("decode", r1, u1), ("hash_bytes", r2, u2)] {
        println!("{what}, {entry}: {result:?}, {usage:?}");
        assert!(result.is_err(), "{what}: {entry} accepted it: {result:?}");
        assert!(
            usage.largest <= MAX_ALLOC && usage.growth <= MAX_ALLOC,
            "{what}: {entry} refused it, but only after allocating {usage:?} (limit {MAX_ALLOC} bytes)"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Input builders (small on purpose: these inputs are a few hundred bytes whatever they declare)
// ---------------------------------------------------------------------------------------------------------

fn small_rgb(w: u32, h: u32) -> Vec<u8> {
    (0..w * h).flat_map(|i| [(i * 7) as u8, (i / w * 5) as u8, (i % w * 3) as u8]).collect()
}

/// A real 16x16 PNG whose IHDR is rewritten to `w`x`h` with a valid CRC.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    use image::ImageEncoder as _;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&small_rgb(16, 16), 16, 16, image::ExtendedColorType::Rgb8)
        .expect("encode PNG");
    assert_eq!(&png[12..16], b"IHDR");
    assert_eq!(crc32(&png[12..29]).to_be_bytes(), png[29..33], "CRC-32 must match the encoder's");
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// A real 16x16 baseline JPEG whose SOF0 is rewritten to `w`x`h`.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode(&small_rgb(16, 16), 16, 16, image::ExtendedColorType::Rgb8)
        .expect("encode JPEG");
    let mut i = 2;
    loop {
        assert!(i + 9 < jpeg.len() && jpeg[i] == 0xFF, "no SOF0 before the scan");
        if jpeg[i + 1] == 0xC0 {
            jpeg[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
            jpeg[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
            return jpeg;
        }
        assert_ne!(jpeg[i + 1], 0xDA, "no SOF0 before the scan");
        i += 2 + usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
    }
}

/// A GIF89a with a `sw`x`sh` logical screen (2-colour global palette) and one `fw`x`fh` frame at the
/// origin whose image data is a clear code, index 0 and an end code.
fn gif_claiming(sw: u16, sh: u16, fw: u16, fh: u16) -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend_from_slice(&sw.to_le_bytes());
    g.extend_from_slice(&sh.to_le_bytes());
    g.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF]);
    g.extend_from_slice(&[0x2C, 0, 0, 0, 0]);
    g.extend_from_slice(&fw.to_le_bytes());
    g.extend_from_slice(&fh.to_le_bytes());
    g.extend_from_slice(&[0, 2, 2, 0x44, 0x01, 0, 0x3B]);
    g
}

// ---------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------

/// The control image's RGB buffer; above [`MAX_ALLOC`], so the control shows the threshold can be crossed.
const CONTROL_RGB_BYTES: usize = 3000 * 2000 * 3;
const _: () = assert!(CONTROL_RGB_BYTES > MAX_ALLOC);

#[test]
fn counter_sees_pixel_buffers() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 3000x2000 is within the default limits; decoding it needs a 3000x2000x3 = 18 MB RGB buffer.
    let gif = gif_claiming(3000, 2000, 1, 1);
    let (img, usage) = measure(|| decode(&gif, &DecodeOptions::default()));
    let img = img.expect("a 3000x2000 GIF is within the default limits");
    assert_eq!((img.width, img.height), (3000, 2000));
    assert!(usage.largest >= CONTROL_RGB_BYTES, "the allocation counter missed the pixel buffer: {usage:?}");
    println!("control, GIF 3000x2000 decoded: {usage:?}");
}

#[test]
fn png_header_claiming_huge_dimensions_allocates_nothing_large() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    refused_cheaply(&png_claiming(100_000, 100_000), "PNG 100000x100000");
    refused_cheaply(&png_claiming(30_000, 30_000), "PNG 30000x30000");
}

#[test]
fn jpeg_frame_header_claiming_huge_dimensions_allocates_nothing_large() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    refused_cheaply(&jpeg_claiming(65_000, 65_000), "JPEG 65000x65000");
    refused_cheaply(&jpeg_claiming(30_000, 30_000), "JPEG 30000x30000");
}

#[test]
fn gif_screen_claiming_huge_dimensions_allocates_nothing_large() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    refused_cheaply(&gif_claiming(65_535, 65_535, 1, 1), "GIF screen 65535x65535");
    refused_cheaply(&gif_claiming(20_000, 20_000, 1, 1), "GIF screen 20000x20000");
}

#[test]
fn gif_frame_claiming_huge_dimensions_in_a_small_screen_allocates_nothing_large() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The logical screen is 16x16, so the screen check passes; the first frame's descriptor declares
    // 20000x20000 (400 Mpx, four times the default pixel limit) backed by three codes of image data.
    // Whatever the answer (refused, or the 16x16 canvas), it must not cost a frame-sized buffer.
    let gif = gif_claiming(16, 16, 20_000, 20_000);
    let (r1, u1) = measure(|| decode(&gif, &DecodeOptions::default()).map(|_| ()));
    let (r2, u2) = measure(|| Hashers::new().hash_bytes(&gif, &HashOptions::default()).map(|_| ()));
    for (entry, result, usage) in [("decode", r1, u1), ("hash_bytes", r2, u2)] {
        println!("GIF frame 20000x20000 in a 16x16 screen, {entry}: {result:?}, {usage:?}");
        assert!(
            usage.largest <= MAX_ALLOC && usage.growth <= MAX_ALLOC,
            "{entry}: a 16x16 GIF whose frame claims 20000x20000 allocated {usage:?} ({result:?})"
        );
    }
}
