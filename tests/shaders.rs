//! Every `shaders/*.wgsl` parses and validates with naga (the front end wgpu itself uses), on its own for
//! `common.wgsl` and with `common.wgsl` prepended for the stages, exactly as `src/gpu/pipelines.rs`
//! assembles them. Needs no GPU.

use std::path::PathBuf;

fn validate(name: &str, source: &str) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    for ep in &module.entry_points {
        assert_eq!(ep.stage, naga::ShaderStage::Compute, "{name}: {} is not a compute entry point", ep.name);
    }
}

#[test]
fn every_wgsl_file_parses_and_validates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let common = std::fs::read_to_string(dir.join("common.wgsl")).expect("common.wgsl");
    validate("common.wgsl", &common);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("shaders/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    let mut stages = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "common.wgsl" {
            continue;
        }
        let stage = std::fs::read_to_string(path).unwrap();
        validate(&name, &format!("{common}\n{stage}"));
        stages += 1;
    }
    println!("validated common.wgsl and {stages} stage shaders");
    assert!(stages >= 9, "expected at least 9 stage shaders, found {stages}");
}
