//! Reading variable-length values from the kernel (xattr name lists and
//! values), which both the sender and the receiver do.

use rustix::io::Errno;

/// Reads a variable-length kernel value (xattr list or value), retrying when it
/// grows between the size query and the read.
pub(crate) fn read_sized(
    query: impl Fn() -> Result<usize, Errno>,
    fetch: impl Fn(&mut [u8]) -> Result<usize, Errno>,
) -> Result<Vec<u8>, Errno> {
    for _ in 0..8 {
        let size = query()?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size];
        match fetch(&mut buf) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::RANGE)
}
