//! Deterministic dataset generation and the seeded mutation used by the
//! small-change resync.
//!
//! Every byte, size, mode and mtime is a pure function of the seed and the
//! index of the file (or 4 KiB block of the large file), so a dataset can be
//! generated twice with identical results, and a mutation can be reverted by
//! regenerating exactly what it touched.

use std::collections::BTreeSet;
use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// Size of the blocks the large file is generated and mutated in.
pub const BLOCK: usize = 4096;
/// Largest small file.
pub const MAX_SMALL: u64 = 64 * 1024;
/// Name of the large file at the root of a dataset.
pub const LARGE_NAME: &str = "large.bin";

/// SplitMix64: tiny, fast, good enough for test data.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn fill_random(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let v = self.next_u64().to_le_bytes();
            let n = rest.len();
            rest.copy_from_slice(&v[..n]);
        }
    }

    /// Text-like bytes: words from a 512-word pseudo dictionary, spaces and
    /// line breaks. zstd shrinks this roughly 3 to 4 times.
    pub fn fill_text(&mut self, buf: &mut [u8]) {
        let dict = dictionary();
        let mut pos = 0;
        let mut words = 0u32;
        while pos < buf.len() {
            let r = self.next_u64();
            for k in 0..6 {
                if pos >= buf.len() {
                    break;
                }
                let w = &dict[((r >> (k * 10)) & 511) as usize];
                let n = w.len().min(buf.len() - pos);
                buf[pos..pos + n].copy_from_slice(&w[..n]);
                pos += n;
                if pos < buf.len() {
                    words += 1;
                    buf[pos] = if words.is_multiple_of(11) {
                        b'\n'
                    } else {
                        b' '
                    };
                    pos += 1;
                }
            }
        }
    }
}

fn dictionary() -> &'static Vec<Vec<u8>> {
    static DICT: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    DICT.get_or_init(|| {
        let mut rng = Rng::new(0x5EED_D1C7);
        let letters = b"etaoinshrdlucmfwypvbgkjqxz";
        (0..512)
            .map(|_| {
                let len = 2 + rng.below(8) as usize;
                // Skewed towards frequent letters, like real text.
                (0..len)
                    .map(|_| {
                        let u = rng.unit();
                        letters[(u * u * letters.len() as f64) as usize]
                    })
                    .collect()
            })
            .collect()
    })
}

/// Hash a tuple of integers into one seed.
pub fn h(parts: &[u64]) -> u64 {
    let mut s = 0x1234_5678_9ABC_DEF0u64;
    for p in parts {
        s = Rng::new(s ^ p.wrapping_mul(0x2545_F491_4F6C_DD1D)).next_u64();
    }
    s
}

/// What a dataset holds.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    /// Bytes of the large file at the root (0: no large file).
    pub large: u64,
    /// Number of small files (0 B to 64 KiB).
    pub files: usize,
    /// A `links/` directory with one hard link and one symlink.
    pub links: bool,
    pub seed: u64,
}

/// Salts for the different things derived from the seed.
const S_DIR: u64 = 1;
const S_FILE: u64 = 2;
const S_DIRTIME: u64 = 3;
const S_BLOCK: u64 = 4;
const S_MUTBLOCK: u64 = 5;
const S_MUTATION: u64 = 6;
const S_META: u64 = 7;

/// Directory tree and naming of a dataset.
pub struct Layout {
    pub spec: Spec,
    /// Relative directories (root excluded), parents before children.
    pub dirs: Vec<String>,
}

impl Layout {
    pub fn new(spec: &Spec) -> Layout {
        // Three levels, about 40 files per directory.
        let want_dirs = (spec.files / 40).max(1) as f64;
        let fanout = (want_dirs.cbrt().ceil() as usize).clamp(2, 64);
        let mut dirs = Vec::new();
        if spec.files > 0 {
            for a in 0..fanout {
                dirs.push(format!("d{a:02}"));
                for b in 0..fanout {
                    dirs.push(format!("d{a:02}/d{b:02}"));
                    for c in 0..fanout {
                        dirs.push(format!("d{a:02}/d{b:02}/d{c:02}"));
                    }
                }
            }
        }
        if spec.links {
            dirs.push("links".to_string());
        }
        Layout {
            spec: spec.clone(),
            dirs,
        }
    }

    fn tree_dirs(&self) -> usize {
        self.dirs.len() - usize::from(self.spec.links)
    }

    pub fn file_dir(&self, i: usize) -> usize {
        Rng::new(h(&[self.spec.seed, S_DIR, i as u64])).below(self.tree_dirs() as u64) as usize
    }

    pub fn file_rel(&self, i: usize) -> String {
        format!("{}/f{:07}", self.dirs[self.file_dir(i)], i)
    }

    pub fn large_blocks(&self) -> u64 {
        self.spec.large.div_ceil(BLOCK as u64)
    }

    /// Content of small file `i` at `version` (0: original, 1: rewritten).
    pub fn file_content(&self, i: usize, version: u64, buf: &mut Vec<u8>) {
        let mut rng = Rng::new(h(&[self.spec.seed, S_FILE, i as u64, version]));
        // Log-uniform between 0 B and 64 KiB: most files are small, as on
        // real volumes (mean about 5.9 KiB, about 6% empty).
        let size = ((MAX_SMALL as f64 + 1.0).powf(rng.unit()).floor() as u64)
            .saturating_sub(1)
            .min(MAX_SMALL) as usize;
        buf.clear();
        buf.resize(size, 0);
        if rng.next_u64() & 1 == 0 {
            rng.fill_random(buf);
        } else {
            rng.fill_text(buf);
        }
    }

    fn file_meta(&self, i: usize, version: u64) -> (u32, SystemTime) {
        let mut rng = Rng::new(h(&[self.spec.seed, S_META, i as u64]));
        let modes = [0o644, 0o644, 0o644, 0o644, 0o755, 0o600, 0o640, 0o444];
        let mode = modes[rng.below(modes.len() as u64) as usize];
        let mut rng = Rng::new(h(&[self.spec.seed, S_META, i as u64, version]));
        (mode, mtime(&mut rng, version))
    }

    fn dir_mtime(&self, d: usize, version: u64) -> SystemTime {
        mtime(
            &mut Rng::new(h(&[self.spec.seed, S_DIRTIME, d as u64, version])),
            version,
        )
    }

    /// Original content of block `b` of the large file: the first half
    /// random, the second half text-like.
    pub fn large_block(&self, b: u64, buf: &mut [u8]) {
        let mut rng = Rng::new(h(&[self.spec.seed, S_BLOCK, b]));
        if b < self.large_blocks() / 2 {
            rng.fill_random(buf);
        } else {
            rng.fill_text(buf);
        }
    }

    fn large_meta(&self, version: u64) -> SystemTime {
        mtime(
            &mut Rng::new(h(&[self.spec.seed, S_META, u64::MAX, version])),
            version,
        )
    }
}

/// A deterministic mtime with nanoseconds; version 1 is later than version 0.
fn mtime(rng: &mut Rng, version: u64) -> SystemTime {
    let secs = 1_600_000_000 + version * 100_000_000 + rng.below(50_000_000);
    let nanos = rng.below(1_000_000_000);
    UNIX_EPOCH + Duration::new(secs, nanos as u32)
}

fn set_mtime(path: &Path, t: SystemTime) -> Result<()> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    f.set_times(FileTimes::new().set_modified(t))
        .with_context(|| format!("set mtime of {}", path.display()))
}

fn write_small(root: &Path, l: &Layout, i: usize, version: u64, buf: &mut Vec<u8>) -> Result<u64> {
    let path = root.join(l.file_rel(i));
    l.file_content(i, version, buf);
    let (mode, t) = l.file_meta(i, version);
    // A new inode each time: a rewritten 0444 file cannot be opened for
    // writing by a non-root user.
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("remove {}", path.display()))
        }
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(buf)
        .with_context(|| format!("write {}", path.display()))?;
    f.set_permissions(Permissions::from_mode(mode))?;
    f.set_times(FileTimes::new().set_modified(t))?;
    Ok(buf.len() as u64)
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Totals of a generated dataset.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

/// Generate the dataset into `root`, which must not exist yet.
pub fn generate(root: &Path, spec: &Spec) -> Result<Totals> {
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let l = Layout::new(spec);
    fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
    for d in &l.dirs {
        fs::create_dir(root.join(d))?;
        fs::set_permissions(root.join(d), Permissions::from_mode(0o755))?;
    }
    let n = threads();
    let mut totals = Totals {
        dirs: l.dirs.len() as u64 + 1,
        ..Totals::default()
    };

    if spec.large > 0 {
        let path = root.join(LARGE_NAME);
        let f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
        f.set_len(spec.large)?;
        // 1 MiB chunks, striped over threads, each written with pwrite.
        const CHUNK: u64 = 256;
        let blocks = l.large_blocks();
        let chunks = blocks.div_ceil(CHUNK);
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = (0..n as u64)
                .map(|t| {
                    let (l, f) = (&l, &f);
                    s.spawn(move || -> Result<()> {
                        let mut buf = vec![0u8; CHUNK as usize * BLOCK];
                        let mut c = t;
                        while c < chunks {
                            let first = c * CHUNK;
                            let last = ((c + 1) * CHUNK).min(blocks);
                            for b in first..last {
                                let o = ((b - first) as usize) * BLOCK;
                                l.large_block(b, &mut buf[o..o + BLOCK]);
                            }
                            let off = first * BLOCK as u64;
                            let len = ((last - first) * BLOCK as u64).min(spec.large - off);
                            f.write_all_at(&buf[..len as usize], off)?;
                            c += n as u64;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("generator thread panicked")?;
            }
            Ok(())
        })?;
        f.set_permissions(Permissions::from_mode(0o644))?;
        f.set_times(FileTimes::new().set_modified(l.large_meta(0)))?;
        totals.files += 1;
        totals.bytes += spec.large;
    }

    let bytes = std::thread::scope(|s| -> Result<u64> {
        let handles: Vec<_> = (0..n)
            .map(|t| {
                let l = &l;
                s.spawn(move || -> Result<u64> {
                    let mut buf = Vec::with_capacity(MAX_SMALL as usize);
                    let mut bytes = 0;
                    for i in (t..l.spec.files).step_by(n) {
                        bytes += write_small(root, l, i, 0, &mut buf)?;
                    }
                    Ok(bytes)
                })
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h.join().expect("generator thread panicked")?;
        }
        Ok(total)
    })?;
    totals.files += spec.files as u64;
    totals.bytes += bytes;

    if spec.links {
        let data = root.join("links/data.txt");
        let mut buf = vec![0u8; 12_345];
        Rng::new(h(&[spec.seed, S_META, 0xD47A])).fill_text(&mut buf);
        fs::write(&data, &buf)?;
        fs::set_permissions(&data, Permissions::from_mode(0o644))?;
        set_mtime(&data, l.large_meta(0) - Duration::from_secs(86_400))?;
        fs::hard_link(&data, root.join("links/data.hardlink"))?;
        std::os::unix::fs::symlink("data.txt", root.join("links/data.symlink"))?;
        totals.files += 3;
        totals.bytes += buf.len() as u64;
    }

    set_dir_mtimes(root, &l, &|_| 0)?;
    Ok(totals)
}

/// Set every directory's mtime, children before parents, root last.
fn set_dir_mtimes(root: &Path, l: &Layout, version: &dyn Fn(usize) -> u64) -> Result<()> {
    for (d, rel) in l.dirs.iter().enumerate().rev() {
        set_mtime(&root.join(rel), l.dir_mtime(d, version(d)))?;
    }
    fs::set_permissions(root, Permissions::from_mode(0o755))?;
    set_mtime(root, l.dir_mtime(usize::MAX, 0))
}

/// The small change applied to a dataset: 1% of the large file's 4 KiB
/// blocks (scattered), 1% of the small files rewritten, 50 added, 50
/// deleted.
pub struct Mutation {
    pub blocks: Vec<u64>,
    pub rewrite: Vec<usize>,
    pub delete: Vec<usize>,
    pub add: Vec<usize>,
}

impl Mutation {
    pub fn new(l: &Layout) -> Mutation {
        let mut rng = Rng::new(h(&[l.spec.seed, S_MUTATION]));
        let nblocks = l.large_blocks();
        let mut blocks = BTreeSet::new();
        let want = (nblocks / 100) as usize;
        while blocks.len() < want {
            blocks.insert(rng.below(nblocks));
        }
        let files = l.spec.files;
        let want_rewrite = files / 100;
        let want_delete = 50.min(files - want_rewrite);
        let mut rewrite = BTreeSet::new();
        while rewrite.len() < want_rewrite {
            rewrite.insert(rng.below(files as u64) as usize);
        }
        let mut delete = BTreeSet::new();
        while delete.len() < want_delete {
            let i = rng.below(files as u64) as usize;
            if !rewrite.contains(&i) {
                delete.insert(i);
            }
        }
        Mutation {
            blocks: blocks.into_iter().collect(),
            rewrite: rewrite.into_iter().collect(),
            delete: delete.into_iter().collect(),
            add: (files..files + 50).collect(),
        }
    }

    fn touched_dirs(&self, l: &Layout) -> BTreeSet<usize> {
        self.rewrite
            .iter()
            .chain(&self.delete)
            .chain(&self.add)
            .map(|&i| l.file_dir(i))
            .collect()
    }

    /// Apply the mutation to a freshly generated (or reverted) dataset.
    pub fn apply(&self, root: &Path, l: &Layout) -> Result<()> {
        if !self.blocks.is_empty() {
            let path = root.join(LARGE_NAME);
            let f = OpenOptions::new().write(true).open(&path)?;
            let mut buf = vec![0u8; BLOCK];
            for &b in &self.blocks {
                Rng::new(h(&[l.spec.seed, S_MUTBLOCK, b])).fill_random(&mut buf);
                let off = b * BLOCK as u64;
                let len = (BLOCK as u64).min(l.spec.large - off) as usize;
                f.write_all_at(&buf[..len], off)?;
            }
            f.set_times(FileTimes::new().set_modified(l.large_meta(1)))?;
        }
        let mut buf = Vec::new();
        for &i in &self.rewrite {
            write_small(root, l, i, 1, &mut buf)?;
        }
        for &i in &self.delete {
            let p = root.join(l.file_rel(i));
            fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))?;
        }
        for &i in &self.add {
            write_small(root, l, i, 0, &mut buf)?;
        }
        let touched = self.touched_dirs(l);
        for d in touched.iter().rev() {
            set_mtime(&root.join(&l.dirs[*d]), l.dir_mtime(*d, 1))?;
        }
        Ok(())
    }

    /// Undo `apply` by regenerating what it touched from the seed.
    pub fn revert(&self, root: &Path, l: &Layout) -> Result<()> {
        if !self.blocks.is_empty() {
            let path = root.join(LARGE_NAME);
            let f = OpenOptions::new().write(true).open(&path)?;
            let mut buf = vec![0u8; BLOCK];
            for &b in &self.blocks {
                l.large_block(b, &mut buf);
                let off = b * BLOCK as u64;
                let len = (BLOCK as u64).min(l.spec.large - off) as usize;
                f.write_all_at(&buf[..len], off)?;
            }
            f.set_times(FileTimes::new().set_modified(l.large_meta(0)))?;
        }
        let mut buf = Vec::new();
        for &i in self.rewrite.iter().chain(&self.delete) {
            write_small(root, l, i, 0, &mut buf)?;
        }
        for &i in &self.add {
            let p = root.join(l.file_rel(i));
            fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))?;
        }
        set_dir_mtimes(root, l, &|_| 0)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} scattered 4 KiB blocks of the large file overwritten, {} small files rewritten, {} added, {} deleted",
            self.blocks.len(),
            self.rewrite.len(),
            self.add.len(),
            self.delete.len()
        )
    }
}

/// Remove a directory tree if it exists.
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(_) => fs::remove_dir_all(path).with_context(|| format!("remove {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("stat {}", path.display())),
    }
}

pub fn src_dir(base: &Path, spec: &Spec) -> PathBuf {
    base.join(format!("{}-src", spec.name))
}
