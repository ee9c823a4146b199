//! Writers: threads that write small new files and rename verified ones
//! into place for the applier, so that their filesystem round trips
//! overlap (`mover receive --appliers N`).
//!
//! Much of what the applier does per file is waiting on the filesystem:
//! creating the temporary, writing it, setting its owner, mode and times,
//! renaming it into place, closing it. On local storage each of those is a
//! few microseconds of CPU. On network storage (NFS, CephFS, SMB, a FUSE
//! filesystem) each is a round trip to a server, and 200,000 small files
//! done one after another wait for a million of them. With writers:
//!
//! - a small file (at most [`HELD_MAX`], not sparse, not resumed from a
//!   partial one) arrives whole in memory and is verified by the applier
//!   as any other; a writer then creates, writes and finishes it while the
//!   applier goes on with the next file;
//! - after a batch's one `syncfs`, its renames are spread over the writers.
//!
//! What depends on order stays with the applier: a file is reported done,
//! its waiting hard links made and its directory settled only once its
//! batch is committed, exactly as without writers. The renames of one
//! batch can run at once because its files all have different names (a
//! session lists a path once).
//!
//! Memory is bounded: at most two files per writer in flight, and at most
//! [`MAX_HELD_BYTES`] of their content.

use super::hasher::Identity;
use crate::dest::hash_cache::SegmentHashes;
use crate::dest::volume::{Dir, FsError, Lane, MetaOptions, Observed, TempFile, Volume};
use crate::entry::Meta;
use crate::wire::message::{FileId, XattrPolicy};
use crossbeam_channel::{Receiver, Sender};
use std::thread::JoinHandle;

/// Largest file handed to a writer; larger ones are streamed to disk by the
/// applier as they arrive (their transfer, not their round trips, is what
/// takes the time).
pub const HELD_MAX: u64 = 1024 * 1024;

/// Most bytes of file content held for writers at once.
const MAX_HELD_BYTES: u64 = 8 * 1024 * 1024;

/// Writers by default on network storage: enough round trips in flight to
/// hide a millisecond of latency behind the transfer of small files.
const NETWORK_WRITERS: usize = 16;

/// Most writers `--appliers` may ask for.
pub const MAX_WRITERS: usize = 64;

/// How many appliers a session on `volume` gets: `requested` if given;
/// else [`NETWORK_WRITERS`] on network storage and one (the applier alone,
/// no threads) on local storage, where each call takes microseconds and
/// handing files to threads cost more than it saved (measured on tmpfs
/// with two CPUs: 5 to 10% slower initial copies and resyncs).
pub fn count(requested: Option<usize>, volume: &Volume) -> usize {
    requested.unwrap_or_else(|| match volume.on_network_storage() {
        true => NETWORK_WRITERS,
        false => 1,
    })
}

/// A verified small file for a writer to create under `work_name` in the
/// work area (to become `name` in `dir`), write and give its metadata.
pub struct Write {
    pub id: FileId,
    pub dir: Dir,
    pub work_name: Vec<u8>,
    pub name: Vec<u8>,
    pub meta: Meta,
    pub opts: MetaOptions,
    pub data: Vec<u8>,
    pub hashes: Option<SegmentHashes>,
}

/// A written file, ready for its batch's commit, with the warnings its
/// metadata gave (what the destination cannot store).
pub struct Written {
    pub id: FileId,
    pub hashes: Option<SegmentHashes>,
    pub result: Result<(TempFile, Vec<String>), FsError>,
    /// Bytes it held in memory.
    held: u64,
}

/// What a rename gives back: the file's identity under its final name,
/// when asked for (its segment hashes go to the hash cache under it).
pub type Renamed = Result<Option<Identity>, FsError>;

/// A name looked at, and what it was.
pub type Look = (Vec<u8>, Result<Observed, FsError>);

enum Job {
    Write(Box<Write>),
    Observe {
        dir: Dir,
        names: Vec<Vec<u8>>,
        policy: XattrPolicy,
    },
    Rename {
        index: usize,
        temp: TempFile,
        identity: bool,
    },
}

/// Where the threads answer: writes and renames apart, so that each wait
/// takes only what it waits for.
#[derive(Clone)]
struct Answers {
    written: Sender<Written>,
    renamed: Sender<(usize, Renamed)>,
    observed: Sender<Vec<Look>>,
}

/// A session's writer threads, started on first use and joined on drop.
pub struct Writers {
    count: usize,
    jobs: Option<Sender<Job>>,
    written: Receiver<Written>,
    renamed: Receiver<(usize, Renamed)>,
    observed: Receiver<Vec<Look>>,
    /// Kept so that a wait can never find every sender gone, and for the
    /// jobs done here when no thread could be started.
    answers: Answers,
    threads: Vec<JoinHandle<()>>,
    /// Writes handed over and not yet collected.
    in_flight: usize,
    held_bytes: u64,
}

impl Writers {
    /// Writers for a session; `None` for one (the applier alone).
    pub fn new(count: usize) -> Option<Writers> {
        let (written_tx, written) = crossbeam_channel::unbounded();
        let (renamed_tx, renamed) = crossbeam_channel::unbounded();
        let (observed_tx, observed) = crossbeam_channel::unbounded();
        (count > 1).then_some(Writers {
            count,
            jobs: None,
            written,
            renamed,
            observed,
            answers: Answers {
                written: written_tx,
                renamed: renamed_tx,
                observed: observed_tx,
            },
            threads: Vec::new(),
            in_flight: 0,
            held_bytes: 0,
        })
    }

    /// Hands `write` to a writer. When as many as the bounds allow are in
    /// flight, first waits for some to finish: those are returned, for the
    /// batch.
    pub fn write(&mut self, write: Write) -> Vec<Written> {
        let len = write.data.len() as u64;
        let mut finished = Vec::new();
        while self.in_flight > 0
            && (self.in_flight >= 2 * self.count || self.held_bytes + len > MAX_HELD_BYTES)
        {
            finished.push(self.next_written());
        }
        self.held_bytes += len;
        self.in_flight += 1;
        self.submit(Job::Write(Box::new(write)));
        finished.extend(self.finished());
        finished
    }

    /// The writes finished so far, without waiting.
    pub fn finished(&mut self) -> Vec<Written> {
        let mut finished = Vec::new();
        while let Ok(written) = self.written.try_recv() {
            finished.push(self.collected(written));
        }
        finished
    }

    /// Waits for every write in flight.
    pub fn wait_all(&mut self) -> Vec<Written> {
        let mut finished = Vec::new();
        while self.in_flight > 0 {
            finished.push(self.next_written());
        }
        finished
    }

    /// Renames each temporary into place, `identity` saying whether its
    /// identity is wanted afterwards; results in the order given.
    pub fn rename_all(&mut self, temps: Vec<(TempFile, bool)>) -> Vec<Renamed> {
        if temps.len() < 2 {
            return temps.into_iter().map(rename).collect();
        }
        let mut results: Vec<Option<Renamed>> = temps.iter().map(|_| None).collect();
        for (index, (temp, identity)) in temps.into_iter().enumerate() {
            self.submit(Job::Rename {
                index,
                temp,
                identity,
            });
        }
        for _ in 0..results.len() {
            // Never fails: this holds a sender itself.
            if let Ok((index, result)) = self.renamed.recv() {
                results[index] = Some(result);
            }
        }
        results.into_iter().flatten().collect()
    }

    /// Looks at each of `names` in `dir` ([`Dir::observe`]), spread over
    /// the writers, and waits for all; in no particular order.
    pub fn observe_all(
        &mut self,
        dir: &Dir,
        names: Vec<Vec<u8>>,
        policy: XattrPolicy,
    ) -> Vec<Look> {
        let per_job = names.len().div_ceil(self.count).max(1);
        let mut names = names.into_iter().peekable();
        let mut jobs = 0;
        while names.peek().is_some() {
            let names = names.by_ref().take(per_job).collect();
            let dir = dir.clone();
            self.submit(Job::Observe { dir, names, policy });
            jobs += 1;
        }
        let mut looks = Vec::new();
        for _ in 0..jobs {
            // Never fails: this holds a sender itself.
            looks.extend(self.observed.recv().unwrap_or_default());
        }
        looks
    }

    /// The next finished write, waiting for it.
    fn next_written(&mut self) -> Written {
        // Never fails: this holds a sender itself.
        let written = self.written.recv().unwrap_or_else(|_| Written {
            id: 0,
            hashes: None,
            result: Err(FsError::Refused {
                at: "receiver".into(),
                problem: "lost a writer's answer",
            }),
            held: 0,
        });
        self.collected(written)
    }

    fn collected(&mut self, written: Written) -> Written {
        self.in_flight -= 1;
        self.held_bytes -= written.held;
        written
    }

    fn submit(&mut self, job: Job) {
        if self.jobs.is_none() {
            self.start();
        }
        let unsent = match &self.jobs {
            Some(jobs) => jobs.send(job).err().map(|e| e.into_inner()),
            None => Some(job),
        };
        // No thread could be started: the applier does the job itself.
        if let Some(job) = unsent {
            run(job, &self.answers, &mut Lanes::None);
        }
    }

    fn start(&mut self) {
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..self.count {
            let (jobs, answers) = (jobs_rx.clone(), self.answers.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("writer-{i}"))
                .spawn(move || {
                    let mut lane = Lanes::Unopened(i);
                    jobs.iter().for_each(|job| run(job, &answers, &mut lane))
                });
            match spawned {
                Ok(handle) => self.threads.push(handle),
                // Fewer threads only means less overlap.
                Err(e) => tracing::warn!("could not start writer thread {i}: {e}"),
            }
        }
        if !self.threads.is_empty() {
            self.jobs = Some(jobs_tx);
        }
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A writer thread's own directory in the work area ([`Lane`]), opened on
/// its first file.
enum Lanes {
    Unopened(usize),
    Open(Lane),
    /// None to be had (no work area, or it could not be made): the
    /// thread creates in the work area itself.
    None,
}

impl Lanes {
    fn get(&mut self, dir: &Dir) -> Option<&Lane> {
        if let Lanes::Unopened(i) = *self {
            *self = match dir.lane(i) {
                Ok(Some(lane)) => Lanes::Open(lane),
                Ok(None) => Lanes::None,
                Err(e) => {
                    tracing::debug!("{e}: creating in the work area itself");
                    Lanes::None
                }
            };
        }
        match self {
            Lanes::Open(lane) => Some(lane),
            _ => None,
        }
    }
}

/// Does one job and answers it.
fn run(job: Job, answers: &Answers, lane: &mut Lanes) {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    // The applier waits for every answer, so even a bug that panics gives
    // one.
    let panicked = || FsError::Refused {
        at: "receiver".into(),
        problem: "a writer thread panicked",
    };
    match job {
        Job::Write(w) => {
            let (id, held) = (w.id, w.data.len() as u64);
            let write = || write(*w, lane);
            let written = catch_unwind(AssertUnwindSafe(write)).unwrap_or_else(|_| Written {
                id,
                hashes: None,
                result: Err(panicked()),
                held,
            });
            let _ = answers.written.send(written);
        }
        Job::Observe { dir, names, policy } => {
            let looks = names.into_iter().map(|name| {
                let observed = catch_unwind(AssertUnwindSafe(|| dir.observe(&name, policy)));
                (name, observed.unwrap_or_else(|_| Err(panicked())))
            });
            let _ = answers.observed.send(looks.collect());
        }
        Job::Rename {
            index,
            temp,
            identity,
        } => {
            let result = catch_unwind(AssertUnwindSafe(|| rename((temp, identity))))
                .unwrap_or_else(|_| Err(panicked()));
            let _ = answers.renamed.send((index, result));
        }
    }
}

/// Creates, writes and finishes one held file.
fn write(w: Write, lane: &mut Lanes) -> Written {
    let result = (|| {
        let lane = lane.get(&w.dir);
        let mut temp = w
            .dir
            .create_temp_as(lane, &w.work_name, &w.name, (&w.meta, w.opts))?;
        temp.write_all(&w.data)?;
        let warnings = temp.set_meta(&w.meta, w.opts)?;
        Ok((temp, warnings))
    })();
    Written {
        id: w.id,
        hashes: w.hashes,
        result,
        held: w.data.len() as u64,
    }
}

/// Renames a verified file into place; its identity afterwards if wanted.
pub fn rename((temp, identity): (TempFile, bool)) -> Renamed {
    temp.rename_then(|file| identity.then(|| Identity::of(file).ok()).flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::RelPath;
    use rustix::fs::{self as rfs, FileType, Mode, OFlags};
    use std::io::Read;
    use std::time::{Duration, Instant};

    const PIPE: usize = 64 * 1024;

    fn meta() -> Meta {
        Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_sec: 1_600_000_000,
            mtime_nsec: 5,
            xattrs: Vec::new(),
        }
    }

    fn job(id: FileId, dir: &Dir, data: Vec<u8>) -> Write {
        Write {
            id,
            dir: dir.clone(),
            work_name: format!("p.{id}").into_bytes(),
            name: format!("f{id}").into_bytes(),
            meta: meta(),
            opts: MetaOptions::default(),
            data,
            hashes: None,
        }
    }

    /// A volume in a temporary directory, its work area `work`.
    fn volume() -> (tempfile::TempDir, Volume, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        let volume = Volume::open("v", tmp.path()).unwrap();
        let root = volume.open_dir(&RelPath::root()).unwrap();
        root.mkdir(b"work", 0o700).unwrap();
        volume.set_work_area(b"work", &root.open_subdir(b"work").unwrap());
        (tmp, volume, root)
    }

    /// Files really are written at once, each by a thread in its own
    /// directory of the work area (its lane): every name a writer may
    /// create is a FIFO, so a write blocks once the pipe is full, and every
    /// file's pipe is full before any is read, each in another lane. One
    /// file at a time, only the first would be; in one directory, all in
    /// the same lane.
    #[test]
    fn writers_write_files_at_the_same_time() {
        let (tmp, _volume, root) = volume();
        let count = 4;
        let fifo = |lane: usize, id: usize| tmp.path().join(format!("work/w.{lane}/p.{id}"));
        for lane in 0..count {
            std::fs::create_dir(tmp.path().join(format!("work/w.{lane}"))).unwrap();
            for id in 0..count {
                let path = fifo(lane, id);
                rfs::mknodat(rfs::CWD, &path, FileType::Fifo, Mode::from(0o600), 0).unwrap();
            }
        }
        let mut writers = Writers::new(count).unwrap();
        for id in 0..count {
            let finished = writers.write(job(id as FileId, &root, vec![id as u8; 4 * PIPE]));
            assert!(finished.is_empty());
        }
        // readers[id][lane]
        let readers: Vec<Vec<std::fs::File>> = (0..count)
            .map(|id| {
                (0..count)
                    .map(|lane| {
                        let flags = OFlags::RDONLY | OFlags::NONBLOCK;
                        let fd = rfs::open(fifo(lane, id), flags, Mode::empty());
                        std::fs::File::from(fd.unwrap())
                    })
                    .collect()
            })
            .collect();
        let queued = |f: &std::fs::File| {
            let mut n = 0i32;
            let fd = std::os::fd::AsRawFd::as_raw_fd(f);
            // SAFETY: FIONREAD writes one int through a valid pointer.
            assert_eq!(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) }, 0);
            n as usize
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        // (bytes in its fullest pipe, that pipe's lane) for each file.
        let mut seen = Vec::new();
        for lanes in &readers {
            seen.push(loop {
                let full = (0..count).map(|l| (queued(&lanes[l]), l)).max().unwrap();
                if full.0 >= PIPE || Instant::now() > deadline {
                    break full;
                }
                std::thread::sleep(Duration::from_millis(5));
            });
        }
        // Drained, every write completes (also when they were not all
        // under way, so that a failure is reported rather than hanging).
        let drain = std::thread::spawn(move || {
            for mut lanes in readers {
                let mut got = Vec::new();
                while got.len() < 4 * PIPE {
                    for reader in &mut lanes {
                        let mut buf = [0u8; PIPE];
                        match reader.read(&mut buf) {
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                assert!(got.iter().all(|&b| b == got[0]));
            }
        });
        let finished = writers.wait_all();
        drain.join().unwrap();
        let full: Vec<usize> = seen.iter().map(|s| s.0).collect();
        assert_eq!(full, vec![PIPE; count], "bytes in each file's pipe");
        let mut lanes: Vec<usize> = seen.iter().map(|s| s.1).collect();
        lanes.sort();
        lanes.dedup();
        assert_eq!(lanes.len(), count, "lanes of the files: {seen:?}");
        assert_eq!(finished.len(), count);
        for written in finished {
            let (temp, warnings) = written.result.unwrap();
            assert!(warnings.is_empty());
            assert_eq!(temp.final_name(), format!("f{}", written.id).as_bytes());
        }
    }

    /// Renames land every file under its own name with its content and
    /// metadata, and each result is in the order of its file, a failure
    /// too.
    #[test]
    fn renames_of_a_batch_report_in_order() {
        let (tmp, _volume, root) = volume();
        let mut writers = Writers::new(3).unwrap();
        let mut written = Vec::new();
        for id in 0..40 {
            written.extend(writers.write(job(id, &root, format!("file {id}").into_bytes())));
        }
        written.extend(writers.wait_all());
        assert_eq!(written.len(), 40);
        let mut temps: Vec<(TempFile, bool)> = written
            .into_iter()
            .map(|w| (w.result.unwrap().0, w.id.is_multiple_of(2)))
            .collect();
        temps.sort_by(|a, b| a.0.final_name().cmp(b.0.final_name()));
        // One whose directory is gone by the time of its rename.
        root.mkdir(b"gone", 0o700).unwrap();
        let gone = root.open_subdir(b"gone").unwrap();
        let mut lost = writers.write(job(99, &gone, b"lost".to_vec()));
        lost.extend(writers.wait_all());
        std::fs::remove_dir(tmp.path().join("gone")).unwrap();
        temps.insert(5, (lost.remove(0).result.unwrap().0, false));
        // A non-empty directory where one goes: it is exchanged and removed.
        std::fs::create_dir_all(tmp.path().join("f7/sub")).unwrap();
        let names: Vec<Vec<u8>> = temps.iter().map(|t| t.0.final_name().to_vec()).collect();
        let renamed = writers.rename_all(temps);
        assert_eq!(renamed.len(), names.len());
        for (name, result) in names.iter().zip(renamed) {
            let name = String::from_utf8(name.clone()).unwrap();
            if name == "f99" {
                let e = result.unwrap_err().to_string();
                assert!(e.contains("v/gone/f99: rename into place"), "{e}");
                continue;
            }
            let id: u32 = name[1..].parse().unwrap();
            let identity = result.unwrap();
            assert_eq!(identity.is_some(), id.is_multiple_of(2), "{name}");
            let path = tmp.path().join(&name);
            assert_eq!(
                std::fs::read(&path).unwrap(),
                format!("file {id}").as_bytes()
            );
            let st = std::fs::metadata(&path).unwrap();
            use std::os::unix::fs::MetadataExt;
            assert_eq!((st.mtime(), st.mtime_nsec()), (1_600_000_000, 5));
        }
        // Each writer's lane is empty again.
        let left: Vec<_> = walkdir::WalkDir::new(tmp.path().join("work"))
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_type().is_dir())
            .collect();
        assert!(left.is_empty(), "temporaries left: {left:?}");
    }
}
