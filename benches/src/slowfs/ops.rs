//! The passthrough itself: each FUSE request answered from the backing
//! directory after the delay, on whichever of the session's threads read
//! it (see [`super::THREADS`]), so independent requests overlap.
//!
//! Every request that has an answer waits the delay first, then acts on
//! the backing directory and answers with what it did, errors included as
//! the same errno. FORGET has no answer (the kernel does not wait for it),
//! so it is not delayed.

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, SeekFrom, Timestamps, XattrFlags};

use super::attr::{self, errno};
use super::nodes::{Handles, Node, Nodes};

/// How long the kernel may trust an entry or attributes it was given
/// before asking again. 0 would make every stat a round trip, as NFS with
/// `actimeo=0`; real NFS mounts cache attributes for seconds (acregmin 3 s,
/// acdirmin 30 s by default), so 1 s is on the cautious side of that.
pub const TTL: Duration = Duration::from_secs(1);

/// Largest write (and read) the kernel sends in one request: NFS's usual
/// wsize/rsize.
const MAX_WRITE: u32 = 1 << 20;

type Res<T> = Result<T, Errno>;

/// One directory entry as read at opendir or rewind.
struct Item {
    ino: u64,
    kind: FileType,
    name: OsString,
}

/// An open directory: its descriptor and the entries read from it. The
/// listing is read whole when the kernel reads from offset 0 (opendir or
/// rewinddir), so offsets are indexes into a stable list.
struct Listing {
    dir: OwnedFd,
    items: Vec<Item>,
}

pub struct SlowFs {
    delay: Duration,
    /// The backing filesystem: objects on another one (a mount inside
    /// the backing directory) would break node ids, so they are refused.
    dev: u64,
    nodes: Nodes,
    files: Handles<File>,
    dirs: Handles<Mutex<Listing>>,
}

thread_local! {
    static READY: Cell<bool> = const { Cell::new(false) };
}

/// Once per session thread: a umask of its own set to 0, because the
/// kernel has already applied the caller's umask to the modes it sends
/// (the backing calls must not apply the daemon's again), and a timer
/// slack of 1 µs so the delay is kept to the microsecond, not to the
/// default 50 µs.
fn prepare_thread() {
    if READY.with(Cell::get) {
        return;
    }
    // SAFETY: plain system calls on the calling thread. Should unshare
    // fail, the umask is the process's: still right for the daemon, which
    // does nothing else.
    unsafe {
        libc::unshare(libc::CLONE_FS);
        libc::umask(0);
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
    READY.with(|r| r.set(true));
}

/// The path that reaches the object of an `O_PATH` descriptor for the
/// calls that take no descriptor (open, chmod, truncate, xattrs).
fn proc_path(node: &Node) -> String {
    format!("/proc/self/fd/{}", node.fd.as_raw_fd())
}

fn is_symlink(node: &Node) -> bool {
    node.kind == rfs::FileType::Symlink
}

/// Change the owner, the group or both of a node (a symlink's own).
fn chown(node: &Node, uid: Option<u32>, gid: Option<u32>) -> Res<()> {
    let flags = AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW;
    let (uid, gid) = (uid.map(rfs::Uid::from_raw), gid.map(rfs::Gid::from_raw));
    rfs::chownat(&node.fd, "", uid, gid, flags).map_err(errno)
}

/// Open flags for the backing open: the caller's, less those the kernel
/// handled already or that cannot apply to a /proc/self/fd path.
fn open_flags(flags: i32) -> OFlags {
    let drop = libc::O_NOFOLLOW | libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY;
    OFlags::from_bits_retain((flags & !drop) as u32) | OFlags::CLOEXEC
}

impl SlowFs {
    pub fn new(backing: &Path, delay: Duration) -> std::io::Result<SlowFs> {
        let root = rfs::open(backing, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())?;
        let st = rfs::fstat(&root)?;
        Ok(SlowFs {
            delay,
            dev: st.st_dev,
            nodes: Nodes::new(root, &st),
            files: Handles::new(),
            dirs: Handles::new(),
        })
    }

    /// The request's round trip.
    fn wait(&self) {
        prepare_thread();
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
    }

    /// unlink or rmdir (`flags`) of `name` in `parent`.
    fn remove(&self, parent: INodeNo, name: &OsStr, flags: AtFlags, reply: ReplyEmpty) {
        self.wait();
        let r = self
            .nodes
            .get(parent)
            .and_then(|p| rfs::unlinkat(&p.fd, name, flags).map_err(errno));
        empty(r, reply);
    }

    fn stat(&self, node: &Node) -> Res<FileAttr> {
        let flags = AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW;
        let st = rfs::statat(&node.fd, "", flags).map_err(errno)?;
        Ok(attr::of(&st, self.nodes.id(st.st_ino)))
    }

    /// Look `name` up in `parent`, counting a lookup of what it names.
    fn lookup_in(&self, parent: &Node, name: &OsStr) -> Res<FileAttr> {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(&parent.fd, name, flags, Mode::empty()).map_err(errno)?;
        let st = rfs::fstat(&fd).map_err(errno)?;
        if st.st_dev != self.dev {
            return Err(Errno::EXDEV);
        }
        let id = self.nodes.add(fd, &st);
        Ok(attr::of(&st, id))
    }

    /// After creating `name` in `parent`: look it up, and give it to the
    /// caller if it is not the daemon's user (the daemon creates as
    /// itself; a setgid directory's group is kept, as the kernel would).
    fn created(&self, req: &Request, parent: &Node, name: &OsStr) -> Res<FileAttr> {
        let a = self.lookup_in(parent, name)?;
        let parent_setgid = self.stat(parent)?.perm & 0o2000 != 0;
        let gid = (!parent_setgid && a.gid != req.gid()).then(|| req.gid());
        let uid = (a.uid != req.uid()).then(|| req.uid());
        if uid.is_none() && gid.is_none() {
            return Ok(a);
        }
        let node = self.nodes.get(a.ino)?;
        chown(&node, uid, gid)?;
        self.stat(&node)
    }

    fn file(&self, fh: FileHandle) -> Res<Arc<File>> {
        self.files.get(fh.0)
    }

    #[allow(clippy::too_many_arguments)]
    fn set(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Res<FileAttr> {
        let node = self.nodes.get(ino)?;
        let open = fh.and_then(|fh| self.file(fh).ok());
        if let Some(mode) = mode {
            let mode = Mode::from_raw_mode(mode & 0o7777);
            match &open {
                Some(f) => rfs::fchmod(f.as_fd(), mode),
                // Linux has no mode for symlinks (lchmod fails the same way).
                None if is_symlink(&node) => Err(rustix::io::Errno::OPNOTSUPP),
                None => rfs::chmod(proc_path(&node), mode),
            }
            .map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            chown(&node, uid, gid)?;
        }
        if let Some(size) = size {
            match &open {
                Some(f) => f.set_len(size).map_err(Errno::from)?,
                None => {
                    let f = rfs::open(proc_path(&node), OFlags::WRONLY, Mode::empty());
                    rfs::ftruncate(f.map_err(errno)?, size).map_err(errno)?;
                }
            }
        }
        if atime.is_some() || mtime.is_some() {
            let times = Timestamps {
                last_access: attr::timespec(atime),
                last_modification: attr::timespec(mtime),
            };
            let flags = AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW;
            rfs::utimensat(&node.fd, "", &times, flags).map_err(errno)?;
        }
        self.stat(&node)
    }

    /// Read a directory's entries from the start.
    fn list(dir: &OwnedFd) -> Res<Vec<Item>> {
        let fd = rfs::openat(dir, ".", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty());
        let mut d = rfs::Dir::new(fd.map_err(errno)?).map_err(errno)?;
        let mut items = Vec::new();
        while let Some(e) = d.read() {
            let e = e.map_err(errno)?;
            let name = OsStr::from_bytes(e.file_name().to_bytes()).to_os_string();
            let kind = match e.file_type() {
                rfs::FileType::Unknown => {
                    let st = rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
                    attr::kind(st.st_mode)
                }
                t => attr::kind(t.as_raw_mode()),
            };
            items.push(Item {
                ino: e.ino(),
                kind,
                name,
            });
        }
        Ok(items)
    }

    fn readdir_into(&self, fh: FileHandle, offset: u64, reply: &mut ReplyDirectory) -> Res<()> {
        let d = self.dirs.get(fh.0)?;
        let mut d = d.lock().unwrap_or_else(|e| e.into_inner());
        if offset == 0 {
            d.items = Self::list(&d.dir)?;
        }
        let from = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, it) in d.items.iter().enumerate().skip(from) {
            let id = INodeNo(self.nodes.id(it.ino));
            if reply.add(id, i as u64 + 1, it.kind, &it.name) {
                break;
            }
        }
        Ok(())
    }

    /// An xattr reply: the size wanted (`size` 0) or the bytes, from a call
    /// that fills a buffer.
    fn xattr_reply(
        size: u32,
        reply: ReplyXattr,
        get: impl FnOnce(&mut [u8]) -> rustix::io::Result<usize>,
    ) {
        let mut buf = vec![0u8; size as usize];
        match get(&mut buf) {
            Ok(n) if size == 0 => reply.size(u32::try_from(n).unwrap_or(u32::MAX)),
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(e)),
        }
    }
}

/// Answer with an entry (lookup, mknod, mkdir, symlink, link).
fn entry(r: Res<FileAttr>, reply: ReplyEntry) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn empty(r: Res<()>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for SlowFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Lookups and readdirs in one directory may run in parallel (as
        // NFS's do); without this the kernel serialises them per directory.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config.set_max_write(MAX_WRITE);
        // Readahead and other background requests may use every thread.
        let _ = config.set_max_background(super::THREADS as u16);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.wait();
        entry(
            self.nodes
                .get(parent)
                .and_then(|p| self.lookup_in(&p, name)),
            reply,
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.nodes.forget(ino, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.wait();
        match self.nodes.get(ino).and_then(|n| self.stat(&n)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.wait();
        match self.set(ino, mode, uid, gid, size, atime, mtime, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.wait();
        let r = self
            .nodes
            .get(ino)
            .and_then(|n| rfs::readlinkat(&n.fd, "", Vec::new()).map_err(errno));
        match r {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.wait();
        let r = self.nodes.get(parent).and_then(|p| {
            let kind = rfs::FileType::from_raw_mode(mode);
            let perm = Mode::from_raw_mode(mode & 0o7777);
            let dev = attr::decode_dev(rdev);
            rfs::mknodat(&p.fd, name, kind, perm, dev).map_err(errno)?;
            self.created(req, &p, name)
        });
        entry(r, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.wait();
        let r = self.nodes.get(parent).and_then(|p| {
            let perm = Mode::from_raw_mode(mode & 0o7777);
            rfs::mkdirat(&p.fd, name, perm).map_err(errno)?;
            self.created(req, &p, name)
        });
        entry(r, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, AtFlags::empty(), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, AtFlags::REMOVEDIR, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.wait();
        let r = self.nodes.get(parent).and_then(|p| {
            rfs::symlinkat(target, &p.fd, link_name).map_err(errno)?;
            self.created(req, &p, link_name)
        });
        entry(r, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.wait();
        let r = self.nodes.get(parent).and_then(|p| {
            let q = self.nodes.get(newparent)?;
            let flags = rfs::RenameFlags::from_bits_retain(flags.bits());
            rfs::renameat_with(&p.fd, name, &q.fd, newname, flags).map_err(errno)
        });
        empty(r, reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.wait();
        let r = self.nodes.get(ino).and_then(|n| {
            let q = self.nodes.get(newparent)?;
            // AT_EMPTY_PATH links the object itself (root may do that).
            rfs::linkat(&n.fd, "", &q.fd, newname, AtFlags::EMPTY_PATH).map_err(errno)?;
            self.lookup_in(&q, newname)
        });
        entry(r, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.wait();
        let r = self.nodes.get(ino).and_then(|n| {
            let fd = rfs::open(proc_path(&n), open_flags(flags.0), Mode::empty());
            Ok(self.files.add(File::from(fd.map_err(errno)?)))
        });
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.wait();
        let r = self.file(fh).and_then(|f| {
            let mut buf = vec![0u8; size as usize];
            let mut n = 0;
            // Short reads only at the end of the file.
            while n < buf.len() {
                match f.read_at(&mut buf[n..], offset + n as u64) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Errno::from(e)),
                }
            }
            buf.truncate(n);
            Ok(buf)
        });
        match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.wait();
        let r = self.file(fh).and_then(|f| {
            f.write_all_at(data, offset).map_err(Errno::from)?;
            Ok(u32::try_from(data.len()).unwrap_or(u32::MAX))
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // A close: a round trip (as NFS's close-to-open flush), nothing
        // to do, as writes went through already.
        self.wait();
        empty(self.file(fh).map(drop), reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.wait();
        self.files.remove(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.wait();
        let r = self.file(fh).and_then(|f| {
            match datasync {
                true => f.sync_data(),
                false => f.sync_all(),
            }
            .map_err(Errno::from)
        });
        empty(r, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.wait();
        let r = self.nodes.get(ino).and_then(|n| {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let dir = rfs::openat(&n.fd, ".", flags, Mode::empty()).map_err(errno)?;
            let items = Vec::new();
            Ok(self.dirs.add(Mutex::new(Listing { dir, items })))
        });
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.wait();
        match self.readdir_into(fh, offset, &mut reply) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.wait();
        self.dirs.remove(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.wait();
        let r = self.dirs.get(fh.0).and_then(|d| {
            let d = d.lock().unwrap_or_else(|e| e.into_inner());
            rfs::fsync(&d.dir).map_err(errno)
        });
        empty(r, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.wait();
        let r = self
            .nodes
            .get(INodeNo::ROOT)
            .and_then(|n| rfs::fstatvfs(&n.fd).map_err(errno));
        match r {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                u32::try_from(s.f_bsize).unwrap_or(4096),
                u32::try_from(s.f_namemax).unwrap_or(255),
                u32::try_from(s.f_frsize).unwrap_or(4096),
            ),
            Err(e) => reply.error(e),
        }
    }

    // Extended attributes (POSIX ACLs among them, as system.posix_acl_*)
    // pass through by the object's /proc/self/fd path. A symlink's cannot
    // be reached that way (the path would name the /proc link itself), so
    // a symlink has none: listing is empty, reading ENODATA, writing
    // ENOTSUP.

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.wait();
        let r = self.nodes.get(ino).and_then(|n| {
            if is_symlink(&n) {
                return Err(Errno::ENOTSUP);
            }
            let flags = XattrFlags::from_bits_retain(flags as u32);
            rfs::setxattr(proc_path(&n), name, value, flags).map_err(errno)
        });
        empty(r, reply);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // The kernel asks for security.capability before every write to a
        // FUSE file (FUSE mounts cannot remember that a file has none, as
        // local ones do with SB_NOSEC); an NFS client does not ask, so that
        // question costs no round trip here. It is still answered.
        if name.as_bytes() != b"security.capability" {
            self.wait();
        }
        match self.nodes.get(ino) {
            Ok(n) if is_symlink(&n) => reply.error(Errno::NO_XATTR),
            Ok(n) => Self::xattr_reply(size, reply, |buf| rfs::getxattr(proc_path(&n), name, buf)),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.wait();
        match self.nodes.get(ino) {
            Ok(n) if is_symlink(&n) => Self::xattr_reply(size, reply, |_| Ok(0)),
            Ok(n) => Self::xattr_reply(size, reply, |buf| rfs::listxattr(proc_path(&n), buf)),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.wait();
        let r = self.nodes.get(ino).and_then(|n| {
            if is_symlink(&n) {
                return Err(Errno::ENOTSUP);
            }
            rfs::removexattr(proc_path(&n), name).map_err(errno)
        });
        empty(r, reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.wait();
        let r = self.nodes.get(parent).and_then(|p| {
            // The caller's flags, O_EXCL included if it asked for it.
            let flags = OFlags::from_bits_retain((flags & !libc::O_NOCTTY) as u32)
                | OFlags::CREATE
                | OFlags::CLOEXEC;
            let perm = Mode::from_raw_mode(mode & 0o7777);
            let fd = rfs::openat(&p.fd, name, flags, perm).map_err(errno)?;
            let fh = self.files.add(File::from(fd));
            match self.created(req, &p, name) {
                Ok(a) => Ok((a, fh)),
                Err(e) => {
                    self.files.remove(fh);
                    Err(e)
                }
            }
        });
        match r {
            Ok((a, fh)) => {
                let fh = FileHandle(fh);
                reply.created(&TTL, &a, Generation(0), fh, FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.wait();
        let r = self.file(fh).and_then(|f| {
            let mode = rfs::FallocateFlags::from_bits_retain(mode as u32);
            rfs::fallocate(f.as_fd(), mode, offset, length).map_err(errno)
        });
        empty(r, reply);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.wait();
        let r = self.file(fh).and_then(|f| {
            let at = u64::try_from(offset).map_err(|_| Errno::EINVAL);
            let pos = match whence {
                libc::SEEK_SET => SeekFrom::Start(at?),
                libc::SEEK_CUR => SeekFrom::Current(offset),
                libc::SEEK_END => SeekFrom::End(offset),
                libc::SEEK_DATA => SeekFrom::Data(at?),
                libc::SEEK_HOLE => SeekFrom::Hole(at?),
                _ => return Err(Errno::EINVAL),
            };
            let to = rfs::seek(f.as_fd(), pos).map_err(errno)?;
            i64::try_from(to).map_err(|_| Errno::EOVERFLOW)
        });
        match r {
            Ok(to) => reply.offset(to),
            Err(e) => reply.error(e),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.wait();
        let r = self.file(fh_in).and_then(|a| {
            let b = self.file(fh_out)?;
            let (mut from, mut to) = (offset_in, offset_out);
            // At most what the answer can count.
            let len = usize::try_from(len.min(u64::from(u32::MAX))).unwrap_or(0);
            let n = rfs::copy_file_range(a.as_fd(), Some(&mut from), b.as_fd(), Some(&mut to), len);
            Ok(u32::try_from(n.map_err(errno)?).unwrap_or(0))
        });
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }
}
