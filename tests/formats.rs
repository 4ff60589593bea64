//! Every lossless container must give back exactly the pixels that were put in, whatever its layout
//! (palette, grey, alpha, 16-bit), so one image hashes the same in all of them. The corpus has no TIFF,
//! 16-bit or lossless-WebP file, so these are generated here with the `image` crate's encoders.

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use pharos::engine::{DecodeAndHash, HashOptions};
use pharos::hash::Hashers;
use pharos::image::{decode, DecodeOptions, Format, PixelData};
use std::io::Cursor;

const W: u32 = 97;
const H: u32 = 61;

fn rgb_pixels() -> Vec<u8> {
    (0..W * H)
        .flat_map(|i| {
            let (x, y) = (i % W, i / W);
            [(x * 255 / W) as u8, (y * 255 / H) as u8, ((x * y) % 251) as u8]
        })
        .collect()
}

fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap_or_else(|e| panic!("encode {format:?}: {e}"));
    out.into_inner()
}

fn decoded_rgb(bytes: &[u8]) -> (Format, Vec<u8>) {
    let d = decode(bytes, &DecodeOptions::default()).expect("decode");
    assert_eq!((d.width, d.height), (W, H));
    (d.format, d.to_rgb().into_owned())
}

#[test]
fn lossless_containers_return_the_same_rgb_and_the_same_hashes() {
    let rgb = rgb_pixels();
    let img = DynamicImage::ImageRgb8(ImageBuffer::<Rgb<u8>, _>::from_raw(W, H, rgb.clone()).unwrap());
    let mut hashers = Hashers::new();
    let want = hashers.hash_pixels(pharos::pixels::ImageView::rgb(W, H, &rgb), true);
    for (format, expect) in [
        (ImageFormat::Png, Format::Png),
        (ImageFormat::Bmp, Format::Bmp),
        (ImageFormat::Tiff, Format::Tiff),
        (ImageFormat::WebP, Format::WebP), // the image crate writes lossless WebP
    ] {
        let bytes = encode(img.clone(), format);
        let (got_format, got) = decoded_rgb(&bytes);
        assert_eq!(got_format, expect);
        assert!(got == rgb, "{format:?}: pixels differ");
        let rec = hashers.hash_bytes(&bytes, &HashOptions { dihedral: true, ..Default::default() }).unwrap();
        assert_eq!(rec, want, "{format:?}: hashes differ");
    }
}

#[test]
fn alpha_is_dropped_not_composited() {
    let rgb = rgb_pixels();
    // Fully transparent everywhere: compositing onto any background would change every pixel.
    let rgba: Vec<u8> = rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 0]).collect();
    let img = DynamicImage::ImageRgba8(ImageBuffer::<Rgba<u8>, _>::from_raw(W, H, rgba).unwrap());
    for format in [ImageFormat::Png, ImageFormat::Tiff, ImageFormat::WebP] {
        let (_, got) = decoded_rgb(&encode(img.clone(), format));
        assert!(got == rgb, "{format:?}: alpha was not simply dropped");
    }
}

#[test]
fn grey_and_grey_alpha_stay_one_channel() {
    let grey: Vec<u8> = (0..W * H).map(|i| ((i * 7) % 256) as u8).collect();
    let l = DynamicImage::ImageLuma8(ImageBuffer::<Luma<u8>, _>::from_raw(W, H, grey.clone()).unwrap());
    let la: Vec<u8> = grey.iter().flat_map(|&g| [g, 17]).collect();
    let la = DynamicImage::ImageLumaA8(ImageBuffer::<LumaA<u8>, _>::from_raw(W, H, la).unwrap());
    for (img, format) in [(l.clone(), ImageFormat::Png), (l, ImageFormat::Tiff), (la, ImageFormat::Png)] {
        let d = decode(&encode(img, format), &DecodeOptions::default()).unwrap();
        match d.data {
            PixelData::Gray(ref g) => assert!(*g == grey, "{format:?}: grey differs"),
            PixelData::Rgb(_) => panic!("{format:?}: grey came back as RGB"),
        }
    }
}

#[test]
fn sixteen_bit_samples_keep_their_high_byte() {
    let rgb = rgb_pixels();
    // v·257 has high byte v and low byte v; add noise to the low byte so rounding would show.
    let rgb16: Vec<u16> =
        rgb.iter().enumerate().map(|(i, &v)| u16::from(v) << 8 | (i % 256) as u16).collect();
    let img = DynamicImage::ImageRgb16(ImageBuffer::<Rgb<u16>, _>::from_raw(W, H, rgb16).unwrap());
    for format in [ImageFormat::Png, ImageFormat::Tiff] {
        let (_, got) = decoded_rgb(&encode(img.clone(), format));
        assert!(got == rgb, "{format:?}: 16-bit samples not reduced to their high byte");
    }
}
