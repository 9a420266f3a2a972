//! A WSGI request body as the server collected it before the app runs: in memory up to
//! `--body-buffer-size` bytes, beyond that in an unnamed temporary file (`O_TMPFILE` in the
//! system temp directory, gone when closed), so a large upload costs disk or page cache instead
//! of worker memory — nginx's `client_body_buffer_size` rule. [`BodySink`] collects,
//! [`RequestBody`] is what `wsgi.input` reads from.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use ferrocorn_http::{BodyFraming, BodyPump, ErrorKind, Limits, ParseError};

/// A body could not be written to its temporary file; the request is answered 500.
#[derive(Debug)]
pub struct SpoolError {
    dir: PathBuf,
    source: std::io::Error,
}

impl SpoolError {
    /// The response status this failure maps to.
    pub fn status(&self) -> u16 {
        500
    }
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "could not spool a request body to a temporary file in {}: {}; point TMPDIR at a \
             writable directory with room, or raise --body-buffer-size",
            self.dir.display(),
            self.source
        )
    }
}

impl std::error::Error for SpoolError {}

/// A complete request body.
#[derive(Debug)]
pub enum RequestBody {
    /// Small enough to keep in memory.
    Memory(Vec<u8>),
    /// Spooled to an unnamed temporary file of `len` bytes.
    Spooled { file: File, len: u64 },
}

impl Default for RequestBody {
    fn default() -> Self {
        RequestBody::Memory(Vec::new())
    }
}

impl RequestBody {
    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            RequestBody::Memory(bytes) => bytes.len() as u64,
            RequestBody::Spooled { len, .. } => *len,
        }
    }

    /// Up to `max` bytes starting at `offset` (fewer only at the end of the body).
    pub fn read_at(&self, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
        let end = offset.saturating_add(max as u64).min(self.len());
        let want = end.saturating_sub(offset) as usize;
        match self {
            RequestBody::Memory(bytes) => {
                Ok(bytes[offset as usize..offset as usize + want].to_vec())
            }
            RequestBody::Spooled { file, .. } => {
                let mut out = vec![0u8; want];
                file.read_exact_at(&mut out, offset)?;
                Ok(out)
            }
        }
    }

    /// Fill `buf` with the bytes at `offset` (the caller keeps `buf` within the body).
    pub fn read_into(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        match self {
            RequestBody::Memory(bytes) => {
                let start = offset as usize;
                buf.copy_from_slice(&bytes[start..start + buf.len()]);
                Ok(())
            }
            RequestBody::Spooled { file, .. } => file.read_exact_at(buf, offset),
        }
    }

    /// The bytes from `offset` up to and including the next `\n`, at most `max` of them.
    pub fn line_at(&self, offset: u64, max: usize) -> std::io::Result<Vec<u8>> {
        const BLOCK: usize = 8192;
        if let RequestBody::Memory(bytes) = self {
            let rest = &bytes[(offset as usize).min(bytes.len())..];
            let window = &rest[..max.min(rest.len())];
            let end = memchr::memchr(b'\n', window).map_or(window.len(), |i| i + 1);
            return Ok(window[..end].to_vec());
        }
        let mut line = Vec::new();
        while line.len() < max {
            let block = self.read_at(offset + line.len() as u64, BLOCK.min(max - line.len()))?;
            if block.is_empty() {
                break;
            }
            if let Some(i) = memchr::memchr(b'\n', &block) {
                line.extend_from_slice(&block[..=i]);
                break;
            }
            line.extend_from_slice(&block);
        }
        Ok(line)
    }

    /// Whether the body lives in a temporary file.
    pub fn is_spooled(&self) -> bool {
        matches!(self, RequestBody::Spooled { .. })
    }
}

/// Collects a body as it arrives, moving it to a temporary file once it outgrows the buffer.
#[derive(Debug)]
pub struct BodySink {
    buffer_size: usize,
    /// The body while it fits the buffer; once spooled, bytes not yet written to the file.
    memory: Vec<u8>,
    spool: Option<Spool>,
}

#[derive(Debug)]
struct Spool {
    file: File,
    dir: PathBuf,
    written: u64,
}

/// Spooled bytes are written to the file in blocks of this size (few large writes instead of
/// one per socket read).
const SPOOL_WRITE_BLOCK: usize = 256 * 1024;

/// Bodies spooled by this process, for the fallback file names.
static SPOOLED: AtomicU64 = AtomicU64::new(0);

impl BodySink {
    /// A sink keeping at most `buffer_size` bytes in memory.
    pub fn new(buffer_size: usize) -> Self {
        BodySink { buffer_size, memory: Vec::new(), spool: None }
    }

    /// Append body bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        if self.spool.is_none() && self.memory.len() + bytes.len() > self.buffer_size {
            let dir = std::env::temp_dir();
            match open_spool_file(&dir) {
                Ok(file) => self.spool = Some(Spool { file, dir, written: 0 }),
                Err(source) => return Err(SpoolError { dir, source }),
            }
        }
        if self.spool.is_some() && self.memory.is_empty() && bytes.len() >= SPOOL_WRITE_BLOCK / 4 {
            return self.write_to_spool(bytes); // large enough to write as it is, no staging copy
        }
        self.memory.extend_from_slice(bytes);
        if self.spool.is_some() && self.memory.len() >= SPOOL_WRITE_BLOCK {
            self.write_out()?;
        }
        Ok(())
    }

    /// Write the staged bytes to the spool file.
    fn write_out(&mut self) -> Result<(), SpoolError> {
        if self.spool.is_none() {
            return Ok(()); // the body is in memory: nothing is staged
        }
        let staged = std::mem::take(&mut self.memory);
        self.write_to_spool(&staged)?;
        self.memory = staged;
        self.memory.clear();
        Ok(())
    }

    fn write_to_spool(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        let Some(spool) = self.spool.as_mut() else { return Ok(()) };
        if let Err(source) = spool.file.write_all(bytes) {
            return Err(SpoolError { dir: spool.dir.clone(), source });
        }
        spool.written += bytes.len() as u64;
        Ok(())
    }

    /// The collected body.
    pub fn finish(mut self) -> Result<RequestBody, SpoolError> {
        self.write_out()?;
        Ok(match self.spool {
            Some(spool) => RequestBody::Spooled { file: spool.file, len: spool.written },
            None => RequestBody::Memory(self.memory),
        })
    }
}

/// A body being collected from a connection's read buffer: the framing cuts it out
/// ([`BodyPump`]), the sink keeps it. Both body readers (the connection driver, and
/// `wsgi.input` for a 100-continue body) feed it what they read until it is complete.
pub struct BodyCollector {
    pump: Option<BodyPump>,
    sink: BodySink,
}

/// Why collecting a body failed.
#[derive(Debug)]
pub enum CollectError {
    /// The body is malformed (chunked framing).
    Parse(ParseError),
    /// It could not be spooled.
    Spool(SpoolError),
}

impl BodyCollector {
    /// A collector for a body framed as `framing`.
    pub fn new(framing: BodyFraming, limits: &Limits, buffer_size: usize) -> Self {
        BodyCollector { pump: BodyPump::new(framing, limits), sink: BodySink::new(buffer_size) }
    }

    /// Take the body bytes at the front of `buf` (leaving what follows the body); true once
    /// the body is complete.
    pub fn take_from(&mut self, buf: &mut Vec<u8>) -> Result<bool, CollectError> {
        let Some(pump) = self.pump.as_mut() else { return Ok(true) };
        let (chunk, complete) = pump.take(buf).map_err(CollectError::Parse)?;
        self.sink.push(&chunk).map_err(CollectError::Spool)?;
        Ok(complete)
    }

    /// The error for a client that closed the connection before the body was complete.
    pub fn ended_early(&self) -> ParseError {
        match &self.pump {
            Some(pump) => pump.ended_early(),
            None => ParseError::new(ErrorKind::NoMoreData, "client closed mid-body"),
        }
    }

    /// The collected body.
    pub fn finish(self) -> Result<RequestBody, SpoolError> {
        self.sink.finish()
    }
}

/// An unnamed read-write file in `dir`: `O_TMPFILE` where the file system has it, otherwise a
/// fresh name unlinked at once. Either way nothing is left behind, even if the worker is killed.
fn open_spool_file(dir: &std::path::Path) -> std::io::Result<File> {
    let unnamed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match unnamed {
        Ok(file) => Ok(file),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
            let n = SPOOLED.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("ferrocorn-body-{}-{n}", std::process::id()));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(file)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(buffer_size: usize, pieces: &[&[u8]]) -> RequestBody {
        let mut sink = BodySink::new(buffer_size);
        for piece in pieces {
            sink.push(piece).expect("spool");
        }
        sink.finish().expect("spool")
    }

    #[test]
    fn small_bodies_stay_in_memory() {
        let body = collect(16, &[b"hello ", b"world"]);
        assert!(!body.is_spooled());
        assert_eq!(body.read_at(0, 100).unwrap(), b"hello world");
    }

    #[test]
    fn a_body_over_the_buffer_moves_to_a_file_whole() {
        let body = collect(8, &[b"first\n", b"second\nthird"]);
        assert!(body.is_spooled());
        assert_eq!(body.len(), 18);
        assert_eq!(body.read_at(0, 100).unwrap(), b"first\nsecond\nthird");
        assert_eq!(body.read_at(6, 3).unwrap(), b"sec");
        assert_eq!(body.read_at(18, 3).unwrap(), b"");
    }

    #[test]
    fn a_body_larger_than_the_write_block_is_whole_in_the_file() {
        let piece: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let body = collect(1000, &[&piece, &piece, &piece, &piece]);
        assert_eq!(body.len(), 400_000);
        assert_eq!(body.read_at(0, usize::MAX).unwrap(), piece.repeat(4));
    }

    #[test]
    fn lines_are_cut_the_same_in_memory_and_in_a_file() {
        let text: Vec<u8> = (0..2000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let long_line = vec![b'x'; 20_000];
        for buffer_size in [usize::MAX, 0] {
            let body = collect(buffer_size, &[&text, &long_line]);
            assert_eq!(body.line_at(0, usize::MAX).unwrap(), b"line 0\n");
            assert_eq!(body.line_at(7, 4).unwrap(), b"line");
            let tail = body.line_at(text.len() as u64, usize::MAX).unwrap();
            assert_eq!(tail.len(), 20_000, "a last line without newline, longer than a block");
        }
    }
}
