//! Host mirrors of the structs the shaders read (`shaders/common.wgsl`), and the layout of the buffers.
//!
//! Keep in sync with `shaders/common.wgsl`: same fields, same order, all 32-bit, no implicit padding
//! (`bytemuck::Pod` refuses padding, and the size assertions below catch a field added on one side only).

use bytemuck::{Pod, Zeroable};

/// Per-submission constants (`Params` in common.wgsl), a uniform buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct Params {
    /// Images in the submission.
    pub(crate) n_images: u32,
    /// 1 when the dihedral variants are computed.
    pub(crate) dihedral: u32,
    /// 1 when the horizontal box passes read planes stored column by column ([`RowLayout::Columns`]).
    pub(crate) columns: u32,
    /// Unused; keeps the uniform at 16 bytes.
    pub(crate) _pad1: u32,
}

impl Params {
    /// The parameters of a submission of `n` images.
    pub(crate) fn new(n: usize, dihedral: bool, layout: RowLayout) -> Params {
        Params {
            n_images: n as u32,
            dihedral: u32::from(dihedral),
            columns: u32::from(layout == RowLayout::Columns),
            _pad1: 0,
        }
    }
}

/// One image of a submission (`ImageMeta` in common.wgsl), an element of a storage array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct ImageMeta {
    /// Width in pixels.
    pub(crate) width: u32,
    /// Height in pixels.
    pub(crate) height: u32,
    /// Bytes per pixel: 1 (grey) or 3 (RGB).
    pub(crate) channels: u32,
    /// Index (in u32 words) of the image's first byte in the pixel buffer.
    pub(crate) pixel_word: u32,
    /// Index (in f32) of the image's plane in plane_a / plane_b.
    pub(crate) plane: u32,
    /// Box-filter window along rows, `window_size(width)`.
    pub(crate) win_rows: u32,
    /// Box-filter window along columns, `window_size(height)`.
    pub(crate) win_cols: u32,
    /// `FLAG_*` bits.
    pub(crate) flags: u32,
    /// Index (in u32) of the image's pHash intermediate image in `temp`.
    pub(crate) temp: u32,
    /// Index (in i32) of the horizontal LANCZOS table in `coeffs`.
    pub(crate) h_axis: u32,
    /// Index (in i32) of the vertical LANCZOS table in `coeffs`.
    pub(crate) v_axis: u32,
    /// Coefficient run stride of the horizontal table.
    pub(crate) h_stride: u32,
    /// Coefficient run stride of the vertical table.
    pub(crate) v_stride: u32,
    /// First input row the vertical pass reads (horizontal-first order).
    pub(crate) span_first: u32,
    /// Number of input rows the vertical pass reads (horizontal-first order).
    pub(crate) span_len: u32,
    /// Keeps the struct a multiple of 16 bytes.
    pub(crate) _pad: u32,
}

const _: () = assert!(std::mem::size_of::<Params>() == 16);
const _: () = assert!(std::mem::size_of::<ImageMeta>() == 64);

/// PDQ stages skip the image (a side below `MIN_HASHABLE_DIM`).
pub(crate) const FLAG_PDQ_SKIP: u32 = 1;
/// 64 × 64 input: no box filter.
pub(crate) const FLAG_NO_FILTER: u32 = 2;
/// pHash: vertical pass first.
pub(crate) const FLAG_VERTICAL_FIRST: u32 = 4;
/// pHash stages skip the image (zero-sized).
pub(crate) const FLAG_PHASH_SKIP: u32 = 8;

/// u32 words of hash output per image: 8 hashes of 8 words, then the quality (`OUT_STRIDE`).
pub(crate) const OUT_STRIDE: usize = 72;
/// Word of the quality within an image's output (`OUT_QUALITY`).
pub(crate) const OUT_QUALITY: usize = 64;
/// f32 per image in buf64.
pub(crate) const BUF64: usize = 64 * 64;
/// f32 per image in dct16: 8 slots of 16 × 16.
pub(crate) const DCT_SLOTS: usize = 8 * 256;
/// u32 per image in thumbs.
pub(crate) const THUMB: usize = 32 * 32;
/// Offset (in f32) of the DCT matrix in the constants buffer, after the three 256-entry luma tables.
pub(crate) const CONST_DCT: usize = 768;
/// Length (in f32) of the constants buffer.
pub(crate) const CONSTS_LEN: usize = CONST_DCT + 16 * 64;

/// How the planes the horizontal box passes read are stored (`PHAROS_GPU_ROW_LAYOUT`).
///
/// Each box pass walks a row or a column with one invocation, sequentially (the reference's rounding order
/// forbids splitting a running sum). With [`RowLayout::Columns`] the luma plane and the first vertical
/// pass's output are written column by column, so the 32 invocations of a warp walking 32 rows read 32
/// adjacent words at every step: one 128-byte transaction, the textbook "coalesced" access. With
/// [`RowLayout::Rows`] every plane is row-major and each invocation reads its own row: one instruction
/// touches 32 sectors, but each 32-byte sector then serves that row's next 7 steps from L1, so a warp waits
/// on memory once every 8 steps instead of at every step, for the same bytes fetched, and the luma and
/// vertical passes store contiguously instead of scattering. By that count `Rows` should be faster wherever
/// L1 keeps a few KB per warp (every current NVIDIA and AMD GPU), and it is the default (on llvmpipe, a
/// CPU, the two are within noise: BENCHMARKS.md). The hashes are identical either way (same operations,
/// same order), so `scripts/gpu-check.sh` measures both on real GPUs and the default follows its figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowLayout {
    /// Column-major planes for the horizontal passes.
    Columns,
    /// Row-major planes everywhere (the default).
    Rows,
}

impl RowLayout {
    /// From `PHAROS_GPU_ROW_LAYOUT` (`columns` or `rows`; unset: rows). Anything else is refused with
    /// a message naming the accepted values.
    pub fn from_env() -> Result<RowLayout, String> {
        match std::env::var("PHAROS_GPU_ROW_LAYOUT") {
            Err(_) => Ok(RowLayout::Rows),
            Ok(v) => RowLayout::parse(&v),
        }
    }

    /// `columns` or `rows` (any case).
    pub fn parse(v: &str) -> Result<RowLayout, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "columns" => Ok(RowLayout::Columns),
            "rows" => Ok(RowLayout::Rows),
            _ => Err(format!("PHAROS_GPU_ROW_LAYOUT must be 'columns' or 'rows', not '{v}'")),
        }
    }

    /// "columns" or "rows".
    pub fn name(self) -> &'static str {
        match self {
            RowLayout::Columns => "columns",
            RowLayout::Rows => "rows",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RowLayout;

    #[test]
    fn row_layout_parses_its_two_names_and_refuses_anything_else() {
        assert_eq!(RowLayout::parse("columns"), Ok(RowLayout::Columns));
        assert_eq!(RowLayout::parse(" Rows "), Ok(RowLayout::Rows));
        for layout in [RowLayout::Columns, RowLayout::Rows] {
            assert_eq!(RowLayout::parse(layout.name()), Ok(layout));
        }
        let e = RowLayout::parse("tiles").unwrap_err();
        assert!(e.contains("'columns' or 'rows', not 'tiles'"), "{e}");
    }
}
