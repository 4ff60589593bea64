//! The `pharos hash` command-line contract (DESIGN.md §3), exercised on the real binary.
//!
//! Inputs are written to temporary directories (synthetic images, plus a few corpus images when a corpus with
//! an `expected.tsv` is present); nothing is written into the repository. Expected hashes come from the
//! library (`pipeline::Hashers`) on the same bytes, so these tests check the front end, not the hashers.

use crate::common;

use common::{pharos, pharos_env, show};

use pharos::engine::{DecodeAndHash, HashOptions};
use pharos::hash::{HashRecord, Hashers};
use pharos::image::{DecodeOptions, Limits};
use serde_json::Value;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Output;
use tempfile::TempDir;

const KEYS: [&str; 6] = ["path", "width", "height", "pdq", "quality", "phash"];
const DIHEDRAL_KEYS: [&str; 7] = ["rot90", "rot180", "rot270", "flipx", "flipy", "flipplus1", "flipminus1"];

// ---------------------------------------------------------------------------------------------------------
// Running the binary and reading its output
// ---------------------------------------------------------------------------------------------------------

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8").lines().map(String::from).collect()
}

/// A JSON object with its keys in the order they appear in the text (`serde_json::Value` would sort them).
struct Ordered(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(V)
    }
}

impl Ordered {
    fn parse(line: &str) -> Ordered {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"))
    }
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
    fn get(&self, key: &str) -> &Value {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v).unwrap_or_else(|| panic!("no key {key}"))
    }
    fn str(&self, key: &str) -> &str {
        self.get(key).as_str().unwrap_or_else(|| panic!("{key} is not a string"))
    }
}

/// What the CLI should print for `path`: the library's record for the file's bytes.
fn library_record(path: &Path, exif: bool, dihedral: bool) -> HashRecord {
    let bytes = std::fs::read(path).expect("read input");
    let opts = HashOptions {
        decode: DecodeOptions { exif_orientation: exif, ..Default::default() },
        dihedral,
        exact: false,
    };
    Hashers::new().hash_bytes(&bytes, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Checks one output line against the library's record for `path` (keys, key order and values).
fn check_hash_line(line: &str, path: &Path, exif: bool, dihedral: bool) {
    let obj = Ordered::parse(line);
    let rec = library_record(path, exif, dihedral);
    let mut want_keys = KEYS.to_vec();
    if dihedral {
        want_keys.push("dihedral");
    }
    assert_eq!(obj.keys(), want_keys, "keys and their order: {line}");
    assert_eq!(obj.str("path"), path.display().to_string(), "{line}");
    assert_eq!(obj.get("width").as_u64(), Some(u64::from(rec.width)), "{line}");
    assert_eq!(obj.get("height").as_u64(), Some(u64::from(rec.height)), "{line}");
    assert_eq!(obj.str("pdq"), rec.pdq.hash.to_hex(), "{line}");
    assert_eq!(obj.str("pdq").len(), 64, "{line}");
    assert_eq!(obj.get("quality").as_u64(), Some(u64::from(rec.pdq.quality)), "{line}");
    assert_eq!(obj.str("phash"), rec.phash.to_hex(), "{line}");
    assert_eq!(obj.str("phash").len(), 16, "{line}");
    if dihedral {
        let d =
            obj.get("dihedral").as_object().unwrap_or_else(|| panic!("dihedral is not an object: {line}"));
        let mut got: Vec<&str> = d.keys().map(String::as_str).collect();
        let mut want = DIHEDRAL_KEYS.to_vec();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "dihedral keys: {line}");
        for (name, h) in rec.dihedral.expect("asked for dihedral").named() {
            assert_eq!(d[name].as_str(), Some(h.to_hex().as_str()), "dihedral {name}: {line}");
        }
    }
}

/// Checks an in-band error line: exactly `path` then `error`, a non-empty message.
fn check_error_line(line: &str, path: &Path) -> String {
    let obj = Ordered::parse(line);
    assert_eq!(obj.keys(), ["path", "error"], "error line keys: {line}");
    assert_eq!(obj.str("path"), path.display().to_string(), "{line}");
    let msg = obj.str("error").to_string();
    assert!(!msg.trim().is_empty(), "empty error message: {line}");
    msg
}

// ---------------------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------------------

fn synthetic_rgb(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let blob = if (x / 9 + y / 7 + seed).is_multiple_of(3) { 90 } else { 0 };
            out.push((x * 200 / w + blob) as u8);
            out.push((y * 200 / h + (x * y + seed * 31) % 40) as u8);
            out.push((((x ^ y) * 3 + seed * 17) % 256) as u8);
        }
    }
    out
}

fn encode(w: u32, h: u32, rgb: &[u8], format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_raw(w, h, rgb.to_vec()).expect("buffer size");
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// GIF through the `gif` crate (the `image` crate here is built without its GIF codec).
fn encode_gif(w: u32, h: u32, rgb: &[u8]) -> Vec<u8> {
    let (w, h) = (u16::try_from(w).unwrap(), u16::try_from(h).unwrap());
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, w, h, &[]).expect("gif encoder");
        enc.write_frame(&gif::Frame::from_rgb(w, h, rgb)).expect("gif frame");
    }
    out
}

/// A synthetic image of the format its extension names (`png`, `jpg`, `gif`, `bmp`, `tif`, `webp`).
fn synthetic_file(path: &Path, w: u32, h: u32, seed: u32) -> PathBuf {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("png").to_ascii_lowercase();
    let format = image::ImageFormat::from_extension(&ext).unwrap_or(image::ImageFormat::Png);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create dir");
    }
    let rgb = synthetic_rgb(w, h, seed);
    let bytes =
        if format == image::ImageFormat::Gif { encode_gif(w, h, &rgb) } else { encode(w, h, &rgb, format) };
    std::fs::write(path, bytes).expect("write image");
    path.to_path_buf()
}

/// A baseline JPEG carrying an EXIF block whose orientation tag says `orientation`.
fn jpeg_with_orientation(w: u32, h: u32, orientation: u16) -> Vec<u8> {
    use image::ImageEncoder as _;
    // Big-endian TIFF header, IFD0 at offset 8 with one entry: Orientation (0x0112), SHORT, count 1.
    let mut exif = b"MM\0\x2A\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
    exif.extend_from_slice(&orientation.to_be_bytes());
    exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut out = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
    enc.set_exif_metadata(exif).expect("EXIF supported");
    enc.write_image(&synthetic_rgb(w, h, 5), w, h, image::ExtendedColorType::Rgb8).expect("encode JPEG");
    out
}

/// A few real corpus images (distinct formats) when a corpus with `expected.tsv` is available.
fn corpus_samples() -> Vec<PathBuf> {
    let dir = common::corpus_dir();
    if !dir.join("expected.tsv").is_file() {
        println!("note: no corpus at {}; using synthetic images only", dir.display());
        return Vec::new();
    }
    let mut seen = std::collections::BTreeSet::new();
    let picked: Vec<PathBuf> = common::rows()
        .into_iter()
        .filter(|r| seen.insert(r.get("format").to_string()))
        .map(|r| r.path())
        .filter(|p| p.is_file())
        .take(4)
        .collect();
    println!("corpus images used: {picked:?}");
    picked
}

/// Synthetic files of every format, in a non-sorted order, plus corpus samples.
fn good_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![
        synthetic_file(&dir.join("m.png"), 96, 64, 1),
        synthetic_file(&dir.join("b.jpg"), 120, 80, 2),
        synthetic_file(&dir.join("z.gif"), 64, 64, 3),
        synthetic_file(&dir.join("a.bmp"), 40, 70, 4),
        synthetic_file(&dir.join("k.tif"), 50, 50, 5),
        synthetic_file(&dir.join("c.webp"), 72, 48, 6),
        synthetic_file(&dir.join("tiny.png"), 3, 3, 7),
    ];
    files.extend(corpus_samples());
    files
}

fn as_args(paths: &[PathBuf]) -> Vec<OsString> {
    paths.iter().map(|p| p.as_os_str().to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------

#[test]
fn one_json_line_per_file_in_argument_order_matching_the_library() {
    let tmp = TempDir::new().unwrap();
    let mut files = good_files(tmp.path());
    // A file named twice is hashed twice, in place.
    files.push(files[0].clone());
    for jobs in ["1", "4"] {
        let mut args: Vec<OsString> = vec!["hash".into(), "--jobs".into(), jobs.into()];
        args.extend(as_args(&files));
        let out = pharos(&args);
        assert_eq!(out.status.code(), Some(0), "all inputs are good: {}", show(&out));
        let lines = stdout_lines(&out);
        assert_eq!(lines.len(), files.len(), "one line per input: {}", show(&out));
        for (line, path) in lines.iter().zip(&files) {
            check_hash_line(line, path, false, false);
        }
    }
}

#[test]
fn key_order_is_exact_in_the_raw_text() {
    // Belt and braces for the parser-based check: the raw line starts with "path" and the keys appear in the
    // contract's order.
    let tmp = TempDir::new().unwrap();
    let f = synthetic_file(&tmp.path().join("x.png"), 32, 32, 9);
    let out = pharos([OsString::from("hash"), f.into_os_string()]);
    let line = stdout_lines(&out).pop().expect("one line");
    assert!(line.starts_with("{\"path\":"), "{line}");
    let positions: Vec<usize> = KEYS
        .iter()
        .map(|k| line.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} in {line}")))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "key order {positions:?}: {line}");
    assert!(line.ends_with('}'), "{line}");
}

/// `--exact`: MD5, SHA-1 and SHA-256 of every file of the corpus (517 files with `PHAROS_CORPUS`) equal what
/// Python's `hashlib` computes from the same files, and the keys come after "phash" in the raw line. Without
/// the flag the keys are absent.
#[test]
fn exact_hashes_equal_pythons_hashlib_on_the_corpus() {
    let dir = common::corpus_dir().join("images");
    let out = pharos([OsString::from("hash"), OsString::from("--exact"), dir.clone().into_os_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let mut ours = std::collections::BTreeMap::new();
    for line in stdout_lines(&out) {
        let at = |k: &str| line.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} in {line}"));
        assert!(at("phash") < at("md5") && at("md5") < at("sha1") && at("sha1") < at("sha256"), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        let hex = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {line}")).to_string();
        ours.insert(hex("path"), (hex("md5"), hex("sha1"), hex("sha256")));
    }
    // The oracle: hashlib over the same paths, one "path md5 sha1 sha256" line each.
    let script = r#"
import hashlib, sys
for p in sys.stdin.read().split("\n"):
    if p:
        b = open(p, "rb").read()
        print(p, hashlib.md5(b).hexdigest(), hashlib.sha1(b).hexdigest(), hashlib.sha256(b).hexdigest())
"#;
    let python = std::env::var("PHAROS_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("this test needs Python 3 ({python}): {e}"));
    let paths: Vec<&str> = ours.keys().map(String::as_str).collect();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), paths.join("\n").as_bytes()).unwrap();
    let py = child.wait_with_output().unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let mut checked = 0;
    for line in String::from_utf8(py.stdout).unwrap().lines() {
        let mut f = line.rsplitn(4, ' ');
        let (sha256, sha1, md5, path) =
            (f.next().unwrap(), f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let want = (md5.to_string(), sha1.to_string(), sha256.to_string());
        assert_eq!(ours[path], want, "{path}");
        checked += 1;
    }
    assert_eq!(checked, ours.len());
    assert!(checked >= 21, "{checked} files");
    eprintln!("pharos hash --exact: MD5, SHA-1 and SHA-256 equal hashlib's on {checked} of {checked} files");

    let out = pharos([OsString::from("hash"), dir.into_os_string()]);
    let first = stdout_lines(&out).swap_remove(0);
    assert!(!first.contains("\"md5\"") && !first.contains("\"sha256\""), "not asked for: {first}");
}

#[test]
fn dihedral_adds_exactly_the_seven_variants() {
    let tmp = TempDir::new().unwrap();
    let files = good_files(tmp.path());
    let mut args: Vec<OsString> = vec!["hash".into(), "--dihedral".into()];
    args.extend(as_args(&files));
    let out = pharos(&args);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), files.len());
    for (line, path) in lines.iter().zip(&files) {
        check_hash_line(line, path, false, true);
    }
    // Without the flag there is no dihedral key at all.
    let plain = pharos(["hash".into(), files[0].clone().into_os_string()]);
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("dihedral"), "{}", show(&plain));
}

/// root/
///   a.jpg, b.png, notes.txt (PNG bytes, wrong extension), readme.md, sub/c.gif, sub/deeper/d.PNG,
///   sub/deeper/e.jpeg, zz.png, broken.jpg (not an image)
fn tree(root: &Path) -> (Vec<PathBuf>, PathBuf) {
    // Created out of order so the directory's own listing order is not already sorted.
    let zz = synthetic_file(&root.join("zz.png"), 40, 40, 1);
    let e = synthetic_file(&root.join("sub/deeper/e.jpeg"), 48, 40, 2);
    let d = synthetic_file(&root.join("sub/deeper/d.PNG"), 40, 48, 3);
    let c = synthetic_file(&root.join("sub/c.gif"), 30, 40, 4);
    let b = synthetic_file(&root.join("b.png"), 50, 30, 5);
    let a = synthetic_file(&root.join("a.jpg"), 64, 48, 6);
    std::fs::copy(&b, root.join("notes.txt")).unwrap();
    std::fs::write(root.join("readme.md"), "# not an image\n").unwrap();
    let broken = root.join("broken.jpg");
    std::fs::write(&broken, b"this is not a JPEG at all").unwrap();
    (vec![a, b, broken.clone(), c, d, e, zz], broken)
}

#[test]
fn directories_are_walked_recursively_sorted_and_filtered_by_extension() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("root");
    let (expected, broken) = tree(&root);
    let extra = synthetic_file(&tmp.path().join("extra.bmp"), 20, 20, 8);

    let mut outputs = Vec::new();
    for jobs in ["1", "3"] {
        let out = pharos([
            OsString::from("hash"),
            "--jobs".into(),
            jobs.into(),
            root.clone().into_os_string(),
            extra.clone().into_os_string(),
        ]);
        assert_eq!(out.status.code(), Some(2), "broken.jpg fails: {}", show(&out));
        let lines = stdout_lines(&out);
        let mut want = expected.clone();
        want.push(extra.clone());
        let got: Vec<String> = lines.iter().map(|l| Ordered::parse(l).str("path").to_string()).collect();
        let want_paths: Vec<String> = want.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(got, want_paths, "walk order (jobs {jobs})");
        for (line, path) in lines.iter().zip(&want) {
            if *path == broken {
                check_error_line(line, path);
            } else {
                check_hash_line(line, path, false, false);
            }
        }
        outputs.push(out);
    }
    assert_eq!(outputs[0].stdout, outputs[1].stdout, "--jobs 1 and --jobs 3 must print the same bytes");
}

#[test]
fn failures_are_reported_in_band_in_place_and_exit_2() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let good1 = synthetic_file(&dir.join("good1.png"), 64, 64, 1);
    let good2 = synthetic_file(&dir.join("good2.jpg"), 80, 60, 2);
    let good3 = synthetic_file(&dir.join("good3.jpg"), 90, 70, 3);
    let missing = dir.join("missing.png");
    let empty = dir.join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let random = dir.join("random.bin");
    let mut x = 0x1234_5678_9ABC_DEF0u64;
    let noise: Vec<u8> = (0..5000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(&random, &noise[..]).unwrap();
    let jpeg = std::fs::read(&good2).unwrap();
    // Cut in the middle of the entropy-coded data.
    let trunc_scan = dir.join("trunc_scan.jpg");
    std::fs::write(&trunc_scan, &jpeg[..jpeg.len() * 2 / 3]).unwrap();
    // Cut in the headers, before the frame header: must fail even right after a good JPEG on the same worker.
    let trunc_head = dir.join("trunc_head.jpg");
    std::fs::write(&trunc_head, &jpeg[..20]).unwrap();
    let subdir = dir.join("a_directory.png");
    std::fs::create_dir(&subdir).unwrap();

    let inputs = [
        (good1.clone(), true),
        (missing.clone(), false),
        (empty.clone(), false),
        (good2.clone(), true),
        (random.clone(), false),
        (trunc_scan.clone(), false),
        (good3.clone(), true),
        (trunc_head.clone(), false),
        (good1.clone(), true),
    ];
    let paths: Vec<PathBuf> = inputs.iter().map(|(p, _)| p.clone()).collect();
    for jobs in ["1", "2"] {
        let mut args: Vec<OsString> = vec!["hash".into(), "--jobs".into(), jobs.into()];
        args.extend(as_args(&paths));
        let out = pharos(&args);
        assert_eq!(out.status.code(), Some(2), "some inputs failed: {}", show(&out));
        let lines = stdout_lines(&out);
        assert_eq!(lines.len(), inputs.len(), "one line per input: {}", show(&out));
        for (line, (path, good)) in lines.iter().zip(&inputs) {
            if *good {
                check_hash_line(line, path, false, false);
                continue;
            }
            let msg = check_error_line(line, path);
            if let Ok(bytes) = std::fs::read(path) {
                // The message is the library's, for the same bytes.
                let want = Hashers::new().hash_bytes(&bytes, &HashOptions::default()).map(|_| ());
                let want = want.expect_err("the library refuses it too").to_string();
                assert_eq!(msg, want, "{}", path.display());
            }
        }
    }
    // A directory named on the command line is walked (here: it is empty), not reported as an error.
    let out = pharos([OsString::from("hash"), subdir.into_os_string(), good1.into_os_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(stdout_lines(&out).len(), 1, "{}", show(&out));
}

/// The path and error message of each line of `out`, in order; `None` for a hash line (which is checked).
fn walk_result(out: &Output) -> Vec<(String, Option<String>)> {
    stdout_lines(out)
        .iter()
        .map(|line| {
            let obj = Ordered::parse(line);
            let path = obj.str("path").to_string();
            if obj.keys().contains(&"error") {
                let msg = check_error_line(line, Path::new(&path));
                (path, Some(msg))
            } else {
                check_hash_line(line, Path::new(&path), false, false);
                (path, None)
            }
        })
        .collect()
}

#[test]
fn a_symlink_loop_in_a_walked_directory_is_reported_in_band_and_each_image_hashed_once() {
    // root/a.png, root/sub/b.png, root/sub/up -> root (a loop: walking it would walk root again, forever).
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("root");
    let a = synthetic_file(&root.join("a.png"), 40, 40, 1);
    let b = synthetic_file(&root.join("sub/b.png"), 40, 32, 2);
    let up = root.join("sub/up");
    std::os::unix::fs::symlink(&root, &up).unwrap();

    for jobs in ["1", "2"] {
        let out =
            pharos([OsString::from("hash"), "--jobs".into(), jobs.into(), root.clone().into_os_string()]);
        assert_eq!(out.status.code(), Some(2), "the loop is a failed input: {}", show(&out));
        let got = walk_result(&out);
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        let want = [a.display().to_string(), b.display().to_string(), up.display().to_string()];
        assert_eq!(paths, want, "each image once, then the loop, in walk order: {}", show(&out));
        let msg = got[2].1.as_deref().expect("the loop is an error line");
        assert!(msg.contains("loop"), "the message should say it is a loop: {msg}");
    }
}

#[test]
fn unreadable_entries_in_a_walked_directory_are_reported_in_band() {
    // Links to nothing cannot be read whoever runs the test (root included): a link named like a directory
    // (say, to a share that is not mounted) may hold images, so it is reported, not dropped; a link named
    // like an image is reported as before; a hidden one stays skipped, as every hidden entry is.
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("root");
    let ok = synthetic_file(&root.join("ok.png"), 32, 32, 3);
    let nowhere = tmp.path().join("nowhere");
    let (album, gone) = (root.join("album"), root.join("gone.jpg"));
    for link in [&album, &gone, &root.join(".cache")] {
        std::os::unix::fs::symlink(&nowhere, link).unwrap();
    }
    let out = pharos([OsString::from("hash"), root.clone().into_os_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let got = walk_result(&out);
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    let want = [album.display().to_string(), gone.display().to_string(), ok.display().to_string()];
    assert_eq!(paths, want, "{}", show(&out));
    assert!(got[0].1.is_some() && got[1].1.is_some(), "the dangling links are error lines: {}", show(&out));

    // A directory whose entries cannot be looked up (read but no search permission): its subdirectory can be
    // neither told apart from a file nor listed, and must be reported too. Permissions do not stop root (CI
    // runs the tests as root), so this half is checked only where they do.
    use std::os::unix::fs::PermissionsExt as _;
    let root2 = tmp.path().join("root2");
    let locked = root2.join("locked");
    synthetic_file(&locked.join("inner/x.png"), 16, 16, 4);
    synthetic_file(&locked.join("y.png"), 16, 16, 5);
    let sealed = root2.join("sealed");
    synthetic_file(&sealed.join("z.png"), 16, 16, 6);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&sealed, std::fs::Permissions::from_mode(0o000)).unwrap();
    let permissions_apply = std::fs::read_dir(&sealed).is_err();
    let out = permissions_apply.then(|| pharos([OsString::from("hash"), root2.clone().into_os_string()]));
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sealed, std::fs::Permissions::from_mode(0o755)).unwrap();
    let Some(out) = out else {
        println!(
            "note: permissions do not stop this user (root?): the unreadable-directory half of this test \
             was not run; the dangling-link half above was"
        );
        return;
    };
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let got = walk_result(&out);
    let want: Vec<(String, bool)> = [locked.join("inner"), locked.join("y.png"), sealed]
        .iter()
        .map(|p| (p.display().to_string(), true))
        .collect();
    let got: Vec<(String, bool)> = got.into_iter().map(|(p, e)| (p, e.is_some())).collect();
    assert_eq!(got, want, "three error lines: {}", show(&out));
}

#[test]
fn usage_errors_exit_1_with_a_message_on_stderr_and_nothing_on_stdout() {
    let tmp = TempDir::new().unwrap();
    let good = synthetic_file(&tmp.path().join("g.png"), 16, 16, 1).display().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["hash"],
        vec!["frobnicate", &good],
        vec!["hash", "--frobnicate", &good],
        vec!["hash", "--backend", "nonsense", &good],
        vec!["hash", "--jobs", "0", &good],
        vec!["hash", "--jobs", "many", &good],
        vec!["hash", "--max-pixels", "-5", &good],
    ];
    for args in cases {
        let out = pharos(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", show(&out));
        assert!(out.stdout.is_empty(), "{args:?}: stdout should be empty: {}", show(&out));
        assert!(!out.stderr.is_empty(), "{args:?}: stderr should say why: {}", show(&out));
    }
    let out = pharos(["hash", "--backend", "nonsense", &good]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"), "{}", show(&out));
}

#[test]
fn help_and_version_exit_0() {
    for args in [vec!["--help"], vec!["hash", "--help"], vec!["help", "hash"], vec!["--version"]] {
        let out = pharos(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", show(&out));
        assert!(!out.stdout.is_empty(), "{args:?}: {}", show(&out));
    }
    let help = String::from_utf8(pharos(["hash", "--help"]).stdout).unwrap();
    for flag in ["--dihedral", "--exif", "--jobs", "--backend", "--max-pixels"] {
        assert!(help.contains(flag), "hash --help should document {flag}:\n{help}");
    }
}

#[test]
fn limits_from_flags_and_environment_fail_in_band() {
    let tmp = TempDir::new().unwrap();
    let (w, h) = (64u32, 48u32);
    let img = synthetic_file(&tmp.path().join("normal.png"), w, h, 1);
    let small = synthetic_file(&tmp.path().join("small.png"), 8, 8, 2);
    let bytes = std::fs::read(&img).unwrap();
    let library_error = |limits: Limits| {
        let opts = HashOptions {
            decode: DecodeOptions { limits, exif_orientation: false },
            dihedral: false,
            exact: false,
        };
        Hashers::new().hash_bytes(&bytes, &opts).expect_err("over the limit").to_string()
    };
    let len = bytes.len() as u64;
    let under = (len - 1).to_string();
    // (flags, environment, the limits they stand for)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], Limits);
    let cases: [Case<'_>; 4] = [
        (&["--max-pixels", "100"], &[], Limits { max_pixels: 100, ..Limits::default() }),
        (&[], &[("PHAROS_MAX_IMAGE_PIXELS", "100")], Limits { max_pixels: 100, ..Limits::default() }),
        (&["--max-side", "50"], &[], Limits { max_width: 50, max_height: 50, ..Limits::default() }),
        (&["--max-bytes", &under], &[], Limits { max_bytes: len - 1, ..Limits::default() }),
    ];
    for (flags, env, limits) in cases {
        let mut args: Vec<OsString> = vec!["hash".into()];
        args.extend(flags.iter().map(OsString::from));
        args.push(img.clone().into_os_string());
        args.push(small.clone().into_os_string());
        let out = pharos_env(&args, env);
        assert_eq!(out.status.code(), Some(2), "{flags:?} {env:?}: {}", show(&out));
        let lines = stdout_lines(&out);
        assert_eq!(lines.len(), 2, "{}", show(&out));
        let msg = check_error_line(&lines[0], &img);
        assert_eq!(msg, library_error(limits), "{flags:?} {env:?}");
        let configured = flags.last().or(env.first().map(|(_, v)| v)).expect("a flag or a variable");
        assert!(
            msg.contains("limit") && msg.contains(configured),
            "the message should mention the limit and its value {configured}: {msg}"
        );
        // The small image is under every one of these limits.
        check_hash_line(&lines[1], &small, false, false);
    }
    let msg = library_error(Limits { max_pixels: 100, ..Limits::default() });
    assert!(msg.contains("100") && msg.contains(&(w * h).to_string()), "value and limit: {msg}");
}

#[test]
fn exif_flag_applies_orientation_6() {
    let tmp = TempDir::new().unwrap();
    let synthetic = tmp.path().join("orient6.jpg");
    std::fs::write(&synthetic, jpeg_with_orientation(96, 64, 6)).unwrap();
    let mut files = vec![synthetic];
    let dir = common::corpus_dir();
    if dir.join("expected.tsv").is_file() {
        files.extend(
            common::rows().into_iter().filter(|r| r.get("exif_orientation") == "6").map(|r| r.path()).take(3),
        );
    } else {
        println!(
            "note: no corpus with expected.tsv at {}; orientation 6 checked on a synthetic JPEG only",
            dir.display()
        );
    }
    for f in &files {
        let plain = pharos([OsString::from("hash"), f.clone().into_os_string()]);
        let exif = pharos([OsString::from("hash"), "--exif".into(), f.clone().into_os_string()]);
        assert_eq!(plain.status.code(), Some(0), "{}", show(&plain));
        assert_eq!(exif.status.code(), Some(0), "{}", show(&exif));
        let (p, e) = (stdout_lines(&plain).remove(0), stdout_lines(&exif).remove(0));
        check_hash_line(&p, f, false, false);
        check_hash_line(&e, f, true, false);
        let (p, e) = (Ordered::parse(&p), Ordered::parse(&e));
        assert_eq!(
            (e.get("width"), e.get("height")),
            (p.get("height"), p.get("width")),
            "{}: --exif should swap width and height",
            f.display()
        );
        assert_ne!(e.str("pdq"), p.str("pdq"), "{}: a rotated image hashes differently", f.display());
    }
}

// ---------------------------------------------------------------------------------------------------------
// Where banks live
// ---------------------------------------------------------------------------------------------------------

/// The data directory is `--data-dir`, else `PHAROS_DATA_DIR`, else `pharos-data` in the platform's data
/// directory: on Linux `$XDG_DATA_HOME` when set (absolute), else `$HOME/.local/share`.
#[cfg(target_os = "linux")]
#[test]
fn data_dir_is_the_flag_then_the_environment_then_the_platform_data_dir() {
    let tmp = TempDir::new().unwrap();
    let t = tmp.path();
    let (home, xdg, env_dir, flag) = (t.join("home"), t.join("xdg"), t.join("env"), t.join("flag"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (h, x, e, f) = (s(&home), s(&xdg), s(&env_dir), s(&flag));
    /// Bank name, extra arguments, environment, the data directory expected.
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, PathBuf);
    let cases: [Case<'_>; 4] = [
        ("a", vec![], vec![("HOME", &h), ("XDG_DATA_HOME", "")], home.join(".local/share/pharos-data")),
        ("b", vec![], vec![("HOME", &h), ("XDG_DATA_HOME", &x)], xdg.join("pharos-data")),
        ("c", vec![], vec![("HOME", &h), ("XDG_DATA_HOME", &x), ("PHAROS_DATA_DIR", &e)], env_dir.clone()),
        (
            "d",
            vec!["--data-dir", &f],
            vec![("HOME", &h), ("XDG_DATA_HOME", &x), ("PHAROS_DATA_DIR", &e)],
            flag.clone(),
        ),
    ];
    for (bank, extra, env, dir) in &cases {
        let mut args: Vec<&str> = vec!["bank", "create", bank];
        args.extend(extra.iter().copied());
        let out = pharos_env(args, env);
        assert!(out.status.success(), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("in {}", dir.join("banks.redb").display())), "{bank}: {err}");
        let dir = s(dir);
        let out = pharos(["bank", "list", "--data-dir", dir.as_str()]);
        let names: Vec<String> = stdout_lines(&out)
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, [bank.to_string()], "{}", show(&out));
    }
}
