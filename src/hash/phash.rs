//! 64-bit DCT pHash, bit-compatible with imagehash 4.3.2 `phash` (see PDQ_SPEC.md §11).

use super::{Hash64, ImageView};

/// Reusable scratch space for [`PhashHasher::hash`]; one per thread.
#[derive(Default)]
pub struct PhashHasher {}

impl PhashHasher {
    /// A hasher with empty scratch buffers (they grow on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// The pHash of `img`.
    pub fn hash(&mut self, img: ImageView<'_>) -> Hash64 {
        let _ = img;
        unimplemented!("pHash is being written")
    }
}

/// The pHash of `img` (allocates scratch space; use a [`PhashHasher`] in loops).
pub fn phash(img: ImageView<'_>) -> Hash64 {
    PhashHasher::new().hash(img)
}
