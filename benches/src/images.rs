//! Image copy benchmark: the orchestrator's registry engine against
//! `skopeo copy`, on the same image set between the same two registries
//! (Debian's `docker-registry`, plain http on loopback, storage on tmpfs).
//!
//! The set is generated as an OCI layout (random, incompressible layers,
//! as compressed layers are) and pushed into the source registry with
//! skopeo, so neither tool seeds its own benchmark. Each run, for each
//! tool, starts a fresh destination registry and times: the initial copy
//! of the set; a re-copy with nothing changed; and a re-copy after every
//! tag moved to a new image that shares all but one small layer (copying
//! each image's `v2` onto the destination's `v1`). Tools alternate which
//! goes first from run to run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use orchestrator::registry::{copy_image, media_type, Digest, Reference, Registry, RegistryConfig};
use serde_json::{json, Value};

use crate::gen::Rng;
use crate::run::{self, Proc};
use crate::{human, Args, MIB};

const KIB: u64 = 1 << 10;
const REGISTRY: &str = "/usr/bin/docker-registry";

/// One image of the set: per platform, its layers as (seed, size). More
/// than one platform makes it an index.
struct ImageSpec {
    name: &'static str,
    platforms: Vec<(&'static str, Vec<(u64, u64)>)>,
}

/// Four images: a base, an app sharing the base's two largest layers (so
/// that both tools can mount them), a worker with many small layers, and a
/// two-platform index. `--quick` divides every size by 64.
fn image_set(quick: bool) -> Vec<ImageSpec> {
    let s = |bytes: u64| if quick { (bytes / 64).max(KIB) } else { bytes };
    let base = [(1, s(96 * MIB)), (2, s(48 * MIB))];
    let mut worker = vec![(20, s(64 * MIB)), (21, s(16 * MIB)), (22, s(4 * MIB))];
    worker.extend((23..33).map(|i| (i, s(64 * KIB))));
    vec![
        ImageSpec {
            name: "base",
            platforms: vec![(
                "amd64",
                [
                    &base[..],
                    &[
                        (3, s(16 * MIB)),
                        (4, s(4 * MIB)),
                        (5, s(MIB)),
                        (6, s(100 * KIB)),
                        (7, s(10 * KIB)),
                    ],
                ]
                .concat(),
            )],
        },
        ImageSpec {
            name: "web",
            platforms: vec![(
                "amd64",
                [
                    &base[..],
                    &[(10, s(32 * MIB)), (11, s(2 * MIB)), (12, s(200 * KIB))],
                ]
                .concat(),
            )],
        },
        ImageSpec {
            name: "worker",
            platforms: vec![("amd64", worker)],
        },
        ImageSpec {
            name: "multi",
            platforms: vec![
                (
                    "amd64",
                    vec![(40, s(40 * MIB)), (41, s(8 * MIB)), (42, s(MIB))],
                ),
                (
                    "arm64",
                    vec![(50, s(40 * MIB)), (51, s(8 * MIB)), (52, s(MIB))],
                ),
            ],
        },
    ]
}

/// The layer a moved tag adds to each platform of image `i`.
fn new_layer(i: usize, platform: usize, quick: bool) -> (u64, u64) {
    let size = if quick { 16 * KIB } else { MIB };
    (1000 + 10 * i as u64 + platform as u64, size)
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum CopyTool {
    Engine,
    Skopeo,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum ImageCase {
    Initial,
    NoChange,
    Moved,
}

impl ImageCase {
    fn label(self) -> &'static str {
        match self {
            ImageCase::Initial => "initial copy",
            ImageCase::NoChange => "no-change re-copy",
            ImageCase::Moved => "re-copy after tags moved (most blobs exist)",
        }
    }

    /// skopeo/engine ratio the issue asks for.
    fn target(self) -> Option<f64> {
        match self {
            ImageCase::Initial => Some(1.0),
            ImageCase::NoChange => None,
            ImageCase::Moved => Some(3.0),
        }
    }

    /// (source tag, destination tag)
    fn tags(self) -> (&'static str, &'static str) {
        match self {
            ImageCase::Moved => ("v2", "v1"),
            _ => ("v1", "v1"),
        }
    }
}

/// What the engine did in a case: blobs uploaded, mounted, existing, and
/// bytes uploaded.
type Moved = (usize, usize, usize, u64);

/// Source digests by tag and image name.
type Digests = BTreeMap<&'static str, BTreeMap<&'static str, Digest>>;

#[derive(Default)]
struct Results {
    secs: Vec<f64>,
    error: Option<String>,
    /// Destination digests compared with the source after the last run.
    equal: Option<std::result::Result<(), String>>,
    /// What the engine did (last run): uploaded, mounted, existing, bytes.
    moved: Option<Moved>,
}

/// Runs the image benchmark; Ok(false) when a copy failed or a
/// destination differs from its source.
pub fn run(args: &Args) -> Result<bool> {
    let skopeo = run::which("skopeo");
    let (Some(skopeo), true) = (skopeo, Path::new(REGISTRY).exists()) else {
        bail!(
            "the image benchmark needs skopeo and docker-registry: apt-get install skopeo \
             docker-registry (./scripts/test installs them)"
        );
    };
    let quick = args.quick;
    let runs = args.runs.unwrap_or(if quick { 1 } else { 3 }).max(1);
    crate::claim(&args.tmpfs_dir)?;
    let base = args.tmpfs_dir.join("images");
    fs::create_dir_all(&base)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let set = image_set(quick);
    let started = Instant::now();
    let res = bench(&rt, &skopeo, &base, &set, quick, runs);
    if !args.keep {
        if let Err(e) = fs::remove_dir_all(&base) {
            eprintln!("bench: cannot remove {}: {e}", base.display());
        }
    }
    let (results, totals) = res?;
    let (report, ok) = report(
        &skopeo,
        &base,
        quick,
        runs,
        &totals,
        &results,
        started.elapsed(),
    );
    println!("{report}");
    let out = match (&args.out, args.images) {
        (Some(o), true) => o.clone(),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(if quick {
                "images-quick.md"
            } else {
                "images.md"
            }),
    };
    if let Some(d) = out.parent() {
        fs::create_dir_all(d)?;
    }
    fs::write(&out, &report).with_context(|| format!("write {}", out.display()))?;
    eprintln!("bench: report written to {}", out.display());
    Ok(ok)
}

/// Counts of the set: images, unique blobs, bytes; and the same for what a
/// moved tag adds.
struct Totals {
    images: usize,
    blobs: usize,
    bytes: u64,
    new_bytes: u64,
}

type Key = (ImageCase, CopyTool);

fn bench(
    rt: &tokio::runtime::Runtime,
    skopeo: &Path,
    base: &Path,
    set: &[ImageSpec],
    quick: bool,
    runs: usize,
) -> Result<(BTreeMap<Key, Results>, Totals)> {
    let (src_proc, src) = start_registry(base, "source")?;
    let t = Instant::now();
    let (digests, totals) = seed(skopeo, base, &src, set, quick)?;
    eprintln!(
        "[images] source seeded: {} images, {} blobs, {} in {:.1} s",
        totals.images,
        totals.blobs,
        human(totals.bytes),
        t.elapsed().as_secs_f64()
    );
    let mut results: BTreeMap<Key, Results> = BTreeMap::new();
    for r in 0..runs {
        let order = if r % 2 == 0 {
            [CopyTool::Engine, CopyTool::Skopeo]
        } else {
            [CopyTool::Skopeo, CopyTool::Engine]
        };
        for tool in order {
            let name = format!("dest-{}-{tool:?}", r + 1).to_lowercase();
            let (dst_proc, dst) = start_registry(base, &name)?;
            for case in [ImageCase::Initial, ImageCase::NoChange, ImageCase::Moved] {
                let slot = results.entry((case, tool)).or_default();
                if slot.error.is_some() {
                    continue;
                }
                let label = format!("[images] {tool:?} {} run {}/{runs}", case.label(), r + 1);
                match copy_set(rt, tool, skopeo, &src, &dst, set, case) {
                    Ok((secs, moved)) => {
                        eprintln!("{label}: {secs:.2} s");
                        slot.secs.push(secs);
                        slot.moved = moved.or(slot.moved);
                    }
                    Err(e) => {
                        eprintln!("{label}: FAILED: {e:#}");
                        slot.error = Some(format!("{e:#}"));
                        continue;
                    }
                }
                if r + 1 == runs {
                    let want = &digests[&case.tags().0];
                    slot.equal = Some(compare(rt, &dst, set, case.tags().1, want));
                }
            }
            drop(dst_proc);
            fs::remove_dir_all(base.join(&name))?;
        }
    }
    drop(src_proc);
    Ok((results, totals))
}

/// A registry on a free loopback port, storage and log under `base/name`.
fn start_registry(base: &Path, name: &str) -> Result<(Proc, String)> {
    let dir = base.join(name);
    fs::create_dir_all(&dir)?;
    let port = run::free_port()?;
    let config = dir.join("config.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: bench\n",
            dir.join("storage").display()
        ),
    )?;
    let mut p = Proc::spawn(
        name,
        Command::new(REGISTRY).arg("serve").arg(&config),
        &dir.join("registry.log"),
    )?;
    run::wait_listen(&mut p, port)?;
    Ok((p, format!("127.0.0.1:{port}")))
}

fn registry(host: &str) -> Result<Registry> {
    Registry::new(RegistryConfig {
        url: format!("http://{host}"),
        ..RegistryConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))
}

fn reference(name: &str, tag: &str) -> Result<Reference> {
    Reference::tag(&format!("bench/{name}"), tag).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Copies the whole set, image after image, as the migration does; returns
/// the wall time and, for the engine, what it moved.
fn copy_set(
    rt: &tokio::runtime::Runtime,
    tool: CopyTool,
    skopeo: &Path,
    src: &str,
    dst: &str,
    set: &[ImageSpec],
    case: ImageCase,
) -> Result<(f64, Option<Moved>)> {
    let (from, to) = case.tags();
    let t = Instant::now();
    match tool {
        CopyTool::Engine => {
            let moved = rt.block_on(async {
                let (s, d) = (registry(src)?, registry(dst)?);
                let mut moved = (0, 0, 0, 0);
                for img in set {
                    let r = copy_image(
                        &s,
                        &reference(img.name, from)?,
                        &d,
                        &reference(img.name, to)?,
                        &|_| {},
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                    moved.0 += r.uploaded;
                    moved.1 += r.mounted;
                    moved.2 += r.existing;
                    moved.3 += r.bytes_uploaded;
                }
                anyhow::Ok(moved)
            })?;
            Ok((t.elapsed().as_secs_f64(), Some(moved)))
        }
        CopyTool::Skopeo => {
            for img in set {
                skopeo_copy(
                    skopeo,
                    &format!("docker://{src}/bench/{}:{from}", img.name),
                    &format!("docker://{dst}/bench/{}:{to}", img.name),
                )?;
            }
            Ok((t.elapsed().as_secs_f64(), None))
        }
    }
}

fn skopeo_copy(skopeo: &Path, from: &str, to: &str) -> Result<()> {
    let out = Command::new(skopeo)
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            from,
            to,
        ])
        .output()
        .context("run skopeo")?;
    if !out.status.success() {
        bail!(
            "skopeo copy {from} {to}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether every image's destination tag names the source's digest.
fn compare(
    rt: &tokio::runtime::Runtime,
    dst: &str,
    set: &[ImageSpec],
    tag: &str,
    want: &BTreeMap<&'static str, Digest>,
) -> std::result::Result<(), String> {
    rt.block_on(async {
        let d = registry(dst).map_err(|e| e.to_string())?;
        let mut bad = Vec::new();
        for img in set {
            let r = reference(img.name, tag).map_err(|e| e.to_string())?;
            let got = d.manifest_digest(&r).await.map_err(|e| e.to_string())?;
            if got.as_ref() != Some(&want[img.name]) {
                bad.push(format!("{r}: {got:?}, source {}", want[img.name]));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("; "))
        }
    })
}

/// Writes the set (tags v1, and v2 with one more layer per platform) as an
/// OCI layout and pushes it into the source registry with skopeo. Returns
/// the source digests by tag and image.
fn seed(
    skopeo: &Path,
    base: &Path,
    src: &str,
    set: &[ImageSpec],
    quick: bool,
) -> Result<(Digests, Totals)> {
    let layout = OciLayout::new(&base.join("layout"))?;
    let mut refs = Vec::new();
    let mut digests = Digests::new();
    for (i, img) in set.iter().enumerate() {
        for tag in ["v1", "v2"] {
            let platforms: Vec<(&str, Vec<(u64, u64)>)> = img
                .platforms
                .iter()
                .enumerate()
                .map(|(p, (arch, layers))| {
                    let mut layers = layers.clone();
                    if tag == "v2" {
                        layers.push(new_layer(i, p, quick));
                    }
                    (*arch, layers)
                })
                .collect();
            let top = layout.image(&platforms, tag)?;
            digests
                .entry(tag)
                .or_default()
                .insert(img.name, top.1.clone());
            refs.push(json!({
                "mediaType": top.0,
                "digest": top.1.to_string(),
                "size": top.2,
                "annotations": { "org.opencontainers.image.ref.name": format!("{}-{tag}", img.name) },
            }));
        }
    }
    fs::write(
        layout.dir.join("index.json"),
        json!({ "schemaVersion": 2, "manifests": refs }).to_string(),
    )?;
    for img in set {
        for tag in ["v1", "v2"] {
            skopeo_copy(
                skopeo,
                &format!("oci:{}:{}-{tag}", layout.dir.display(), img.name),
                &format!("docker://{src}/bench/{}:{tag}", img.name),
            )?;
        }
    }
    fs::remove_dir_all(&layout.dir)?;
    let totals = layout.totals(set.len());
    Ok((digests, totals))
}

/// An OCI image layout being written: blobs by digest, manifests, and
/// (written by the caller) index.json naming the tags.
struct OciLayout {
    dir: PathBuf,
    /// Sizes of v1 blobs and of blobs only v2 has, unique by digest.
    v1: std::cell::RefCell<BTreeMap<Digest, u64>>,
    v2_only: std::cell::RefCell<BTreeMap<Digest, u64>>,
}

impl OciLayout {
    fn new(dir: &Path) -> Result<OciLayout> {
        fs::create_dir_all(dir.join("blobs/sha256"))?;
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(OciLayout {
            dir: dir.to_path_buf(),
            v1: Default::default(),
            v2_only: Default::default(),
        })
    }

    /// Stores a blob; returns its descriptor. Layers and configs are
    /// counted in the totals of `tag`'s image set, manifests (None) not.
    fn blob(&self, media: &str, data: &[u8], tag: Option<&str>) -> Result<Value> {
        let d = Digest::of(data);
        let path = self.dir.join("blobs/sha256").join(d.hex());
        if !path.exists() {
            fs::write(&path, data).with_context(|| format!("write {}", path.display()))?;
        }
        let size = data.len() as u64;
        match tag {
            Some("v1") => {
                self.v1.borrow_mut().insert(d.clone(), size);
            }
            Some(_) if !self.v1.borrow().contains_key(&d) => {
                self.v2_only.borrow_mut().insert(d.clone(), size);
            }
            _ => {}
        }
        Ok(json!({ "mediaType": media, "digest": d.to_string(), "size": size }))
    }

    /// Writes an image (an index when several platforms); returns the top
    /// manifest's media type, digest and size.
    fn image(
        &self,
        platforms: &[(&str, Vec<(u64, u64)>)],
        tag: &str,
    ) -> Result<(String, Digest, u64)> {
        let mut manifests = Vec::new();
        for (arch, layers) in platforms {
            let mut descs = Vec::new();
            for &(seed, size) in layers {
                let mut data = vec![0u8; size as usize];
                Rng::new(seed).fill_random(&mut data);
                descs.push(self.blob(
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                    &data,
                    Some(tag),
                )?);
            }
            let config = json!({
                "architecture": arch,
                "os": "linux",
                "config": { "Labels": { "bench.tag": tag } },
                "rootfs": { "type": "layers", "diff_ids": descs.iter().map(|d| d["digest"].clone()).collect::<Vec<_>>() },
            });
            let config = self.blob(
                "application/vnd.oci.image.config.v1+json",
                config.to_string().as_bytes(),
                Some(tag),
            )?;
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": media_type::OCI_MANIFEST,
                "config": config,
                "layers": descs,
            });
            let mut m = self.blob(
                media_type::OCI_MANIFEST,
                manifest.to_string().as_bytes(),
                None,
            )?;
            m["platform"] = json!({ "architecture": arch, "os": "linux" });
            manifests.push(m);
        }
        let top = if manifests.len() == 1 {
            manifests.remove(0)
        } else {
            let index = json!({
                "schemaVersion": 2,
                "mediaType": media_type::OCI_INDEX,
                "manifests": manifests,
            });
            self.blob(media_type::OCI_INDEX, index.to_string().as_bytes(), None)?
        };
        let digest: Digest = top["digest"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?;
        Ok((
            top["mediaType"].as_str().unwrap_or_default().to_string(),
            digest,
            top["size"].as_u64().unwrap_or_default(),
        ))
    }

    fn totals(&self, images: usize) -> Totals {
        let v1 = self.v1.borrow();
        Totals {
            images,
            blobs: v1.len(),
            bytes: v1.values().sum(),
            new_bytes: self.v2_only.borrow().values().sum(),
        }
    }
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn report(
    skopeo: &Path,
    base: &Path,
    quick: bool,
    runs: usize,
    totals: &Totals,
    results: &BTreeMap<Key, Results>,
    elapsed: Duration,
) -> (String, bool) {
    let mut s = String::new();
    let mut ok = true;
    let registry = run::version_line(Path::new(REGISTRY), &["--version"], "registry");
    let skopeo_version = run::version_line(skopeo, &["--version"], "skopeo");
    let git = |a: &[&str]| {
        Command::new("git")
            .args(a)
            .current_dir(crate::workspace_root())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let mut commit = git(&["rev-parse", "--short", "HEAD"]);
    if !git(&["status", "--porcelain", "--", "orchestrator/src/registry"]).is_empty() {
        commit.push_str(" + uncommitted changes in orchestrator/src/registry/");
    }
    let _ = writeln!(
        s,
        "# image copy benchmark{}\n\n{} on {}. orchestrator {commit} (registry engine, in \
         process); {skopeo_version}; {registry}. Both registries plain http on 127.0.0.1, \
         storage on {} ({}); {runs} run(s) per case, a fresh destination registry per run and \
         tool.\n",
        if quick { " (--quick)" } else { "" },
        crate::utc_now(),
        crate::machine(),
        base.display(),
        crate::fs_type(base),
    );
    let _ = writeln!(
        s,
        "Image set: {} images in `bench/*` (a base; an app sharing the base's two largest \
         layers; a worker with 13 layers; a two-platform OCI index), {} unique blobs, {} of \
         random (incompressible) layers. Moved tags: every image gets one new {} layer per \
         platform and a new config ({} new in all).\n",
        totals.images,
        totals.blobs,
        human(totals.bytes),
        human(new_layer(0, 0, quick).1),
        human(totals.new_bytes),
    );
    let _ = writeln!(
        s,
        "| case | engine s | skopeo s | skopeo/engine | target | engine: uploaded / mounted / \
         existing blobs (bytes uploaded) | equal? |"
    );
    let _ = writeln!(s, "|---|--:|--:|--:|---|---|---|");
    for case in [ImageCase::Initial, ImageCase::NoChange, ImageCase::Moved] {
        let get = |t| results.get(&(case, t));
        let cell = |t| match get(t) {
            Some(r) if r.error.is_some() => "FAIL".to_string(),
            Some(r) => median(&r.secs).map_or("-".into(), |v| format!("{v:.2}")),
            None => "-".into(),
        };
        let med = |t| {
            get(t)
                .filter(|r| r.error.is_none())
                .and_then(|r| median(&r.secs))
        };
        let ratio = match (med(CopyTool::Skopeo), med(CopyTool::Engine)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let target = match (case.target(), ratio) {
            (Some(t), Some(r)) => format!("≥{t}x: {}", if r >= t { "met" } else { "NOT met" }),
            (Some(t), None) => format!("≥{t}x"),
            (None, _) => "-".into(),
        };
        let moved = get(CopyTool::Engine)
            .and_then(|r| r.moved)
            .map_or("-".into(), |(u, m, e, b)| {
                format!("{u} / {m} / {e} ({})", human(b))
            });
        let mut bad = Vec::new();
        let mut checked = false;
        for t in [CopyTool::Engine, CopyTool::Skopeo] {
            match get(t).map(|r| (&r.equal, &r.error)) {
                Some((_, Some(_))) => bad.push(format!("{t:?} failed")),
                Some((Some(Err(_)), _)) => bad.push(format!("{t:?}")),
                Some((Some(Ok(())), _)) => checked = true,
                _ => {}
            }
        }
        let equal = if !bad.is_empty() {
            ok = false;
            format!("NO: {}", bad.join(", "))
        } else if checked {
            "yes".into()
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {target} | {moved} | {equal} |",
            case.label(),
            cell(CopyTool::Engine),
            cell(CopyTool::Skopeo),
            ratio.map_or("-".into(), |r| format!("{r:.2}")),
        );
    }
    let _ = writeln!(s, "\nAll runs (seconds):\n");
    for ((case, tool), r) in results {
        let v: Vec<String> = r.secs.iter().map(|x| format!("{x:.2}")).collect();
        let _ = writeln!(s, "- {} {tool:?}: {}", case.label(), v.join(", "));
    }
    let mut problems = String::new();
    for ((case, tool), r) in results {
        if let Some(e) = &r.error {
            let _ = writeln!(problems, "- {} {tool:?} FAILED: {e}", case.label());
        }
        if let Some(Err(e)) = &r.equal {
            let _ = writeln!(
                problems,
                "- {} {tool:?} destination differs: {e}",
                case.label()
            );
        }
    }
    if !problems.is_empty() {
        let _ = writeln!(s, "\nProblems:\n\n{problems}");
    }
    let _ = writeln!(
        s,
        "\nTotal benchmark time {:.0} s. Times: median wall-clock seconds to copy the whole set, \
         image after image (as the migration does): the engine from creating its registry \
         handles to the last manifest written, in this process, up to 4 blobs of an image at \
         once; skopeo as one `skopeo copy --all --preserve-digests` process per image \
         (containers/image copies layers in parallel too, and keeps a blob-location cache \
         that lets it mount). Equal: after the last run of each case, every destination tag \
         names the source's digest (manifests and indexes are copied byte for byte).",
        elapsed.as_secs_f64()
    );
    (s, ok)
}
