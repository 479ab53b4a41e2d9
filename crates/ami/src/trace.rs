//! Trace files: the raw AMI byte stream of a session, exactly as received, with arrival times.
//!
//! `FILE` holds the bytes (banner included), so any AMI tool — and `ringlink replay` — reads it as a plain
//! stream. `FILE.idx` has one line per received chunk: `<byte offset> <unix time in microseconds>`, which is
//! enough to replay a session at its real pace or to see network batching.

use std::fs::File;
use std::future::Future;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::client::{ClientConfig, Error};
use crate::codec::Frame;

/// Appends chunks to a trace and its index.
pub struct TraceWriter {
    data: BufWriter<File>,
    index: BufWriter<File>,
    offset: u64,
}

/// The index file that belongs to a trace file.
pub fn index_path(trace: &Path) -> PathBuf {
    let mut name = trace.as_os_str().to_owned();
    name.push(".idx");
    PathBuf::from(name)
}

impl TraceWriter {
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(Self {
            data: BufWriter::new(File::create(path)?),
            index: BufWriter::new(File::create(index_path(path))?),
            offset: 0,
        })
    }

    /// Records one chunk as it arrived now.
    pub fn write_chunk(&mut self, bytes: &[u8]) -> io::Result<()> {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        self.write_chunk_at(bytes, micros as u64)
    }

    pub fn write_chunk_at(&mut self, bytes: &[u8], unix_micros: u64) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        writeln!(self.index, "{} {}", self.offset, unix_micros)?;
        self.data.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.data.flush()?;
        self.index.flush()
    }
}

/// A chunk's position and arrival time from an index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub unix_micros: u64,
}

/// Reads an index file; a malformed line is an error naming its line number.
pub fn read_index(path: &Path) -> io::Result<Vec<IndexEntry>> {
    let reader = BufReader::new(File::open(path)?);
    let mut entries = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let parse = |s: Option<&str>| s.and_then(|v| v.parse::<u64>().ok());
        match (parse(parts.next()), parse(parts.next())) {
            (Some(offset), Some(unix_micros)) => entries.push(IndexEntry { offset, unix_micros }),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: line {}: expected `<offset> <unix micros>`", path.display(), n + 1),
                ))
            }
        }
    }
    Ok(entries)
}

/// Decodes a recorded trace into frames, each with the arrival time (unix microseconds) of the chunk that
/// completed it, from the trace's index (`None` for every frame when the index is empty). This is how a replay
/// times events that carry no `Timestamp` header (manager.conf `timestampevents = no`).
pub fn decode_timed(bytes: &[u8], index: &[IndexEntry]) -> Vec<(Frame, Option<u64>)> {
    use tokio_util::codec::Decoder;
    let whole = [None];
    let timed: Vec<Option<IndexEntry>> = index.iter().copied().map(Some).collect();
    let chunks: &[Option<IndexEntry>] = if timed.is_empty() { &whole } else { &timed };
    let mut codec = crate::codec::AmiCodec::new();
    let mut buf = bytes::BytesMut::new();
    let mut frames = Vec::new();
    let mut last = None;
    for (i, chunk) in chunks.iter().enumerate() {
        let start = chunk
            .map_or(0, |c| usize::try_from(c.offset).unwrap_or(usize::MAX))
            .min(bytes.len());
        let end = match chunks.get(i + 1).copied().flatten() {
            Some(next) => usize::try_from(next.offset)
                .unwrap_or(usize::MAX)
                .clamp(start, bytes.len()),
            None => bytes.len(),
        };
        buf.extend_from_slice(&bytes[start..end]);
        let at = chunk.map(|c| c.unix_micros);
        // Decoding a BytesMut never produces an I/O error; stop defensively if it did.
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            frames.push((frame, at));
        }
        last = at;
    }
    while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
        frames.push((frame, last));
    }
    frames
}

/// A stream wrapper that copies every byte read into a trace.
pub(crate) struct Tap<S> {
    inner: S,
    writer: Arc<Mutex<TraceWriter>>,
    error: Option<io::Error>,
}

impl<S> Tap<S> {
    pub(crate) fn new(inner: S, writer: Arc<Mutex<TraceWriter>>) -> Self {
        Self {
            inner,
            writer,
            error: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.error.take() {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                let result = match self.writer.lock() {
                    Ok(mut w) => w.write_chunk(new),
                    Err(_) => Err(io::Error::other("trace writer poisoned")),
                };
                // A trace that cannot be written is a failed recording: surface it on the next read.
                if let Err(e) = result {
                    self.error = Some(e);
                }
            }
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a recording captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSummary {
    pub bytes: u64,
    pub messages: u64,
    pub events: u64,
}

/// Why a recording stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Ami(#[from] Error),
    #[error("cannot write trace {path}: {error}")]
    Write { path: PathBuf, error: io::Error },
}

/// Logs in with `config` and records the session into `path` until `stop` completes or the server closes the
/// connection. The login exchange is part of the trace, as it is part of the stream.
pub async fn record(
    config: &ClientConfig,
    path: &Path,
    stop: impl Future<Output = ()>,
) -> Result<RecordSummary, RecordError> {
    let write_err = |error: io::Error| RecordError::Write {
        path: path.to_owned(),
        error,
    };
    let writer = Arc::new(Mutex::new(TraceWriter::create(path).map_err(write_err)?));
    let mut transport = crate::client::open_session_with_tap(config, Some(writer.clone())).await?;
    let mut summary = RecordSummary {
        bytes: 0,
        messages: 0,
        events: 0,
    };
    tokio::pin!(stop);
    let result = loop {
        tokio::select! {
            _ = &mut stop => break Ok(()),
            frame = transport.next() => match frame {
                Some(Ok(Frame::Message(m))) => {
                    summary.messages += 1;
                    if m.event_name().is_some() {
                        summary.events += 1;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(write_err(e)),
                None => break Ok(()),
            }
        }
    };
    let mut w = writer
        .lock()
        .map_err(|_| write_err(io::Error::other("trace writer poisoned")))?;
    w.flush().map_err(write_err)?;
    summary.bytes = w.bytes_written();
    result.map(|()| summary)
}
