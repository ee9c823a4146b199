pub mod fresh;
pub mod hash_cache;
pub mod volume;
pub mod work;

/// The names in a directory, sorted: what the tests of this module compare.
#[cfg(test)]
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
