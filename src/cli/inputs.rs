//! What `pharos hash` hashes: the paths on its command line, with directories expanded.
//!
//! A directory is walked recursively, depth-first, each directory's entries sorted by file name, hidden
//! entries (names starting with `.`) skipped, and only files with an image extension kept. Symbolic links are
//! followed; a link that leads back to a directory being walked (a loop) is not followed again but reported.
//! Every entry the walk cannot read (a directory that cannot be listed, a link to nothing, a loop) becomes an
//! [`Input::Unreadable`], which the caller reports in-band like any other failed input: nothing is dropped
//! silently, and the walk uses no recursion, so no tree can overflow the stack.

use std::path::{Path, PathBuf};

/// File name extensions picked up when walking a directory (case-insensitive). Files named explicitly are
/// always tried, whatever their name: the format is sniffed from the bytes, not the name.
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "jpe", "jfif", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// One input: a file to hash, or an entry that could not be read, with the reason.
pub(super) enum Input {
    File(PathBuf),
    Unreadable(PathBuf, String),
}

impl Input {
    pub(super) fn path(&self) -> &Path {
        match self {
            Input::File(p) | Input::Unreadable(p, _) => p,
        }
    }
}

/// Expands directories (see the module documentation) and keeps everything else in argument order.
pub(super) fn collect_inputs(paths: &[PathBuf]) -> Vec<Input> {
    let mut inputs = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut inputs);
        } else {
            inputs.push(Input::File(p.clone()));
        }
    }
    inputs
}

fn walk(root: &Path, inputs: &mut Vec<Input>) {
    let entries = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        // The root was named on the command line, so it counts even if its name starts with a dot.
        .filter_entry(|e| e.depth() == 0 || !is_hidden(e.path()));
    // The directories currently being walked, by depth: an error while listing a directory does not carry
    // that directory's path, so it is taken from here.
    let mut open_dirs: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) if e.file_type().is_dir() => {
                open_dirs.truncate(e.depth());
                open_dirs.push(e.into_path());
            }
            Ok(e) => {
                if has_image_extension(e.path()) {
                    inputs.push(Input::File(e.into_path()));
                }
            }
            Err(err) => {
                let path = match err.path() {
                    Some(p) => p.to_path_buf(),
                    None => err
                        .depth()
                        .checked_sub(1)
                        .and_then(|d| open_dirs.get(d))
                        .map_or(root, |p| p)
                        .to_path_buf(),
                };
                // Errors bypass `filter_entry`: a hidden entry stays skipped even when it cannot be read.
                if err.depth() > 0 && is_hidden(&path) {
                    continue;
                }
                let reason = describe(&err, &path);
                inputs.push(Input::Unreadable(path, reason));
            }
        }
    }
}

/// The reason for an entry the walk could not read, without repeating its path (the caller prints that).
fn describe(err: &walkdir::Error, path: &Path) -> String {
    if let Some(ancestor) = err.loop_ancestor() {
        return format!("symbolic link loop: leads back to {}, which is being walked", ancestor.display());
    }
    let io = err.io_error().map_or_else(|| err.to_string(), ToString::to_string);
    if path.is_dir() {
        format!("cannot list directory: {io}")
    } else {
        format!("cannot read: {io}")
    }
}

fn is_hidden(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}
