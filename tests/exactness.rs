//! The GPU issue's acceptance 2, without a GPU: every PDQ stage re-run on the CPU under the worst a driver
//! may do to float arithmetic it is not forbidden to touch (fused multiply-add, reassociation, reciprocal
//! division, NaN-blind comparisons; `pharos::gpu::model`), over the corpus and the stress images.
//!
//! - The shaders as they were (WGSL through wgpu, `div_rn`, the run-time zero in the DCT): the test prints
//!   which stages change and how many hash bits flip, and requires that something does, so the model is
//!   shown to bite.
//! - The shaders as they are (every float operation `NoContraction`, integer `div_exact`): no stage may
//!   differ from the CPU reference by a single bit, under any liberty.
//!
//! `PHAROS_EXACTNESS_STEP=N` takes every N-th corpus image (default 1: all).

use crate::common::rows;
use pharos::gpu::model::{self, Formulation, Liberties, ModelRun};
use pharos::hash::pdq;
use pharos::image::{decode, DecodeOptions, Decoded};
use pharos::pixels::ImageView;
use rayon::prelude::*;

/// Differences one (formulation, liberties) makes over the whole set.
#[derive(Default, Clone, Copy)]
struct Tally {
    /// Images where the stage, given the reference's input, gives a different output: luma, box rows
    /// (first pass), box cols (first pass), quality, DCT.
    stages: [usize; 5],
    /// Images whose end-to-end PDQ hash differs, and the bits flipped in all.
    hashes: usize,
    bits: u32,
    /// Images whose end-to-end quality differs.
    quality: usize,
}

impl Tally {
    fn add(mut self, o: Tally) -> Tally {
        for (a, b) in self.stages.iter_mut().zip(o.stages) {
            *a += b;
        }
        self.hashes += o.hashes;
        self.bits += o.bits;
        self.quality += o.quality;
        self
    }

    fn is_clean(&self) -> bool {
        self.stages.iter().all(|&n| n == 0) && self.hashes == 0 && self.quality == 0
    }
}

const STAGES: [&str; 5] = ["luma", "box rows", "box cols", "quality", "dct"];

fn differs(a: &[f32], b: &[f32]) -> usize {
    usize::from(a.iter().zip(b).any(|(x, y)| x.to_bits() != y.to_bits()))
}

/// One image under one (formulation, liberties): each stage on the reference's input, then end to end.
fn tally(img: ImageView<'_>, reference: &ModelRun, f: Formulation, lib: Liberties) -> Tally {
    let mut t = Tally::default();
    let (h, w) = (img.height as usize, img.width as usize);
    let mut luma = vec![0f32; h * w];
    model::luma(img, f, lib, &mut luma);
    t.stages[0] = differs(&luma, &reference.luma);
    if !(h == 64 && w == 64) {
        let (mut out, mut want) = (vec![0f32; h * w], vec![0f32; h * w]);
        model::model_box_rows(&reference.luma, &mut out, h, w, pdq::window_size(w), f, lib);
        pdq::box_rows(&reference.luma, &mut want, h, w, pdq::window_size(w));
        t.stages[1] = differs(&out, &want);
        let mut sums = vec![0f32; w];
        model::model_box_cols(&reference.luma, &mut out, h, w, pdq::window_size(h), f, lib);
        pdq::box_cols(&reference.luma, &mut want, h, w, pdq::window_size(h), &mut sums);
        t.stages[2] = differs(&out, &want);
    }
    let buf64: [f32; 4096] = reference.buf64.as_slice().try_into().expect("64 × 64");
    t.stages[3] = usize::from(model::model_quality(&buf64, f, lib) != reference.quality);
    t.stages[4] = differs(&model::model_dct(&buf64, f, lib), &reference.dct);
    let run = model::run(img, f, lib).expect("hashable");
    let bits = run.hash.distance(&reference.hash);
    t.hashes = usize::from(bits > 0);
    t.bits = bits;
    t.quality = usize::from(run.quality != reference.quality);
    t
}

fn corpus() -> Vec<(String, Decoded)> {
    let step = std::env::var("PHAROS_EXACTNESS_STEP").ok().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    rows()
        .into_iter()
        .step_by(step)
        .map(|row| {
            let bytes = std::fs::read(row.path()).expect("read corpus image");
            (row.get("path").to_string(), decode(&bytes, &DecodeOptions::default()).expect("decode"))
        })
        .collect()
}

#[test]
fn no_driver_liberty_changes_a_bit_of_the_pinned_shaders() {
    let corpus = corpus();
    let stress = pharos::synth::stress_images(false);
    let mut views: Vec<(String, ImageView<'_>)> = corpus.iter().map(|(n, d)| (n.clone(), d.view())).collect();
    for s in &stress {
        let v = if s.channels == 1 {
            ImageView::gray(s.width, s.height, &s.pixels)
        } else {
            ImageView::rgb(s.width, s.height, &s.pixels)
        };
        views.push((s.name.clone(), v));
    }
    // Below PDQ's minimum size nothing is computed.
    views.retain(|(_, v)| v.width >= pdq::MIN_HASHABLE_DIM && v.height >= pdq::MIN_HASHABLE_DIM);
    let references: Vec<ModelRun> =
        views.par_iter().map(|(_, v)| model::reference(*v).expect("hashable")).collect();
    // The model with no liberties is the reference itself, stage by stage: the model is faithful.
    let faithful = views
        .par_iter()
        .zip(&references)
        .map(|((_, v), r)| tally(*v, r, Formulation::Before, Liberties::default()))
        .reduce(Tally::default, Tally::add);
    assert!(faithful.is_clean(), "the model without liberties must equal the CPU reference");

    println!("{} images ({} corpus, {} stress)", views.len(), corpus.len(), stress.len());
    println!(
        "{:<12} {:<22} {:>5} {:>9} {:>9} {:>8} {:>5} {:>7} {:>5} {:>8}",
        "shaders", "liberty", "luma", "box rows", "box cols", "quality", "dct", "hashes", "bits", "quality*"
    );
    let mut before_flips = 0;
    for (name, lib) in Liberties::worst_cases() {
        for f in [Formulation::Before, Formulation::Now] {
            let t = views
                .par_iter()
                .zip(&references)
                .map(|((_, v), r)| tally(*v, r, f, lib))
                .reduce(Tally::default, Tally::add);
            let label = if f == Formulation::Before { "before" } else { "now" };
            println!(
                "{label:<12} {name:<22} {:>5} {:>9} {:>9} {:>8} {:>5} {:>7} {:>5} {:>8}",
                t.stages[0], t.stages[1], t.stages[2], t.stages[3], t.stages[4], t.hashes, t.bits, t.quality
            );
            match f {
                Formulation::Now => assert!(
                    t.is_clean(),
                    "pinned shaders changed under {name}: {:?}",
                    STAGES.iter().zip(t.stages).collect::<Vec<_>>()
                ),
                Formulation::Before => before_flips += t.bits,
            }
        }
    }
    println!("(stage columns: images whose stage output differs given the reference's input; hashes/bits/quality*: end to end)");
    assert!(
        before_flips > 0,
        "the unpinned shaders flipped no hash bit under any liberty: the model does not bite"
    );
}
