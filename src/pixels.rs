//! Pixels to hash: the view every decoder produces and every hasher (CPU or GPU) reads.
//!
//! A leaf: it depends on nothing else in the crate, so `image` (which produces pixels) and `hash` / `gpu`
//! (which consume them) can share it without depending on each other.

/// Pixels to hash: a borrowed, tightly packed, row-major 8-bit buffer.
///
/// Grey images stay one channel (a third of the memory of RGB); the hashers treat a grey value `g` exactly as
/// the reference treats the RGB pixel `(g, g, g)` that Pillow's `convert("RGB")` would have produced.
#[derive(Clone, Copy, Debug)]
pub struct ImageView<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The samples.
    pub pixels: Pixels<'a>,
}

/// The sample layout of an [`ImageView`].
#[derive(Clone, Copy, Debug)]
pub enum Pixels<'a> {
    /// `R, G, B` interleaved, `3 × width × height` bytes.
    Rgb(&'a [u8]),
    /// One grey byte per pixel, `width × height` bytes.
    Gray(&'a [u8]),
}

impl<'a> ImageView<'a> {
    /// A view over interleaved RGB bytes. Panics if the length is not `3 × width × height`.
    pub fn rgb(width: u32, height: u32, data: &'a [u8]) -> Self {
        assert_eq!(data.len(), 3 * width as usize * height as usize, "RGB buffer size");
        ImageView { width, height, pixels: Pixels::Rgb(data) }
    }

    /// A view over grey bytes. Panics if the length is not `width × height`.
    pub fn gray(width: u32, height: u32, data: &'a [u8]) -> Self {
        assert_eq!(data.len(), width as usize * height as usize, "grey buffer size");
        ImageView { width, height, pixels: Pixels::Gray(data) }
    }
}

impl ImageView<'_> {
    /// The sample bytes, whatever the layout.
    pub fn bytes(&self) -> &[u8] {
        match self.pixels {
            Pixels::Rgb(p) | Pixels::Gray(p) => p,
        }
    }
}
