//! Planning one submission: which stages run, where each image's pixels, planes and LANCZOS tables sit in
//! the slot's buffers, and the dispatch extents. Bookkeeping on the CPU, no device calls.

use super::buffers::Sizes;
use super::layout::*;
use super::GpuHasher;
use crate::hash::pdq;
use crate::hash::phash;
use crate::pixels::{ImageView, Pixels};
use std::collections::HashMap;

/// Dispatch extents of one submission.
#[derive(Clone, Copy, Default)]
pub(super) struct Dims {
    pub(super) n: u32,
    pub(super) max_pixels: usize,
    pub(super) max_w: usize,
    pub(super) max_h: usize,
    pub(super) max_first: usize,
    pub(super) dihedral: bool,
}

/// The stages, in submission order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    PhashFirst,
    PhashSecond,
    Luma,
    BoxRows,
    BoxCols,
    /// The second round's horizontal pass, stored at decimate's 64 columns only.
    BoxRowsSampled,
    /// The second round's vertical pass over decimate's 64 columns, stored at its 64 rows only.
    BoxColsSampled,
    Decimate,
    Quality,
    Dct,
    Dihedral,
    Threshold,
}

impl GpuHasher {
    /// Metadata, coefficient tables, buffer sizes and dispatch extents of a chunk whose image `i` sits at
    /// byte `offsets[i]` of the pixel buffer.
    pub(super) fn plan(
        &self,
        images: &[ImageView<'_>],
        offsets: &[u64],
        dihedral: bool,
    ) -> (Vec<ImageMeta>, Vec<i32>, Sizes, Dims) {
        let mut metas = Vec::with_capacity(images.len());
        let mut coeffs: Vec<i32> = Vec::new();
        let mut axis_at: HashMap<usize, (u32, u32)> = HashMap::new();
        let mut sizes = Sizes { images: images.len(), ..Default::default() };
        let mut dims = Dims { n: images.len() as u32, dihedral, ..Default::default() };
        for (img, &offset) in images.iter().zip(offsets) {
            let (w, h) = (img.width as usize, img.height as usize);
            let mut flags = 0;
            if img.width < pdq::MIN_HASHABLE_DIM || img.height < pdq::MIN_HASHABLE_DIM {
                flags |= FLAG_PDQ_SKIP;
            }
            if w == 64 && h == 64 {
                flags |= FLAG_NO_FILTER;
            }
            let mut meta = ImageMeta {
                width: img.width,
                height: img.height,
                channels: match img.pixels {
                    Pixels::Rgb(_) => 3,
                    Pixels::Gray(_) => 1,
                },
                pixel_word: (offset / 4) as u32,
                plane: sizes.plane as u32,
                win_rows: pdq::window_size(w) as u32,
                win_cols: pdq::window_size(h) as u32,
                temp: sizes.temp as u32,
                ..Default::default()
            };
            sizes.pixel_words = sizes.pixel_words.max(((offset + super::upload_len(img)) / 4) as usize);
            if flags & FLAG_PDQ_SKIP == 0 {
                sizes.plane += w * h;
                dims.max_pixels = dims.max_pixels.max(w * h);
                dims.max_w = dims.max_w.max(w);
                dims.max_h = dims.max_h.max(h);
            }
            if w == 0 || h == 0 {
                flags |= FLAG_PHASH_SKIP;
            } else {
                let mut axis = |n: usize| -> (u32, u32) {
                    *axis_at.entry(n).or_insert_with(|| {
                        let t = self.table(n);
                        let at = coeffs.len() as u32;
                        for &(first, count) in &t.bounds {
                            coeffs.extend([first as i32, count as i32]);
                        }
                        coeffs.extend_from_slice(&t.fixed);
                        (at, t.stride as u32)
                    })
                };
                (meta.h_axis, meta.h_stride) = axis(w);
                (meta.v_axis, meta.v_stride) = axis(h);
                let first = if phash::vertical_first_order(img.width, img.height) {
                    flags |= FLAG_VERTICAL_FIRST;
                    32 * w
                } else {
                    let span = self.table(h).span();
                    meta.span_first = span.start as u32;
                    meta.span_len = span.len() as u32;
                    32 * span.len()
                };
                sizes.temp += first;
                dims.max_first = dims.max_first.max(first);
            }
            meta.flags = flags;
            metas.push(meta);
        }
        sizes.coeffs = coeffs.len();
        (metas, coeffs, sizes, dims)
    }
}

impl Stage {
    pub(super) fn name(self) -> &'static str {
        match self {
            Stage::PhashFirst => "phash_resize first",
            Stage::PhashSecond => "phash_resize second",
            Stage::Luma => "luma",
            Stage::BoxRows => "box_rows",
            Stage::BoxCols => "box_cols",
            Stage::BoxRowsSampled => "box_rows sampled",
            Stage::BoxColsSampled => "box_cols sampled",
            Stage::Decimate => "decimate",
            Stage::Quality => "quality",
            Stage::Dct => "dct",
            Stage::Dihedral => "dihedral",
            Stage::Threshold => "threshold",
        }
    }
}

/// The stages of a submission, in order: two rounds of the box filter (the reference's
/// `PDQ_NUM_JAROSZ_XY_PASSES`; the second computes only what decimate samples, as the CPU does), the
/// dihedral stage only when asked.
pub(super) fn stages(dihedral: bool) -> Vec<Stage> {
    use Stage::*;
    let mut s = vec![
        PhashFirst,
        PhashSecond,
        Luma,
        BoxRows,
        BoxCols,
        BoxRowsSampled,
        BoxColsSampled,
        Decimate,
        Quality,
        Dct,
    ];
    if dihedral {
        s.push(Dihedral);
    }
    s.push(Threshold);
    s
}

/// f32 of one filter plane for `img` (none when PDQ skips it).
pub fn plane_len(img: &ImageView<'_>) -> usize {
    if img.width < pdq::MIN_HASHABLE_DIM || img.height < pdq::MIN_HASHABLE_DIM {
        0
    } else {
        img.width as usize * img.height as usize
    }
}
