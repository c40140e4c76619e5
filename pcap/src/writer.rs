//! The capture writer: classic pcap files (Ethernet link type, microsecond or nanosecond
//! timestamps) in which each UDP datagram becomes one frame, or a run of IP fragments.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::craft::{FrameBuilder, VlanTags};
use crate::error::WriteError;
use crate::link::link_type;
use crate::records::MAX_CAPLEN;

/// Resolution of the timestamps written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimestampPrecision {
    /// Microseconds (magic `a1b2c3d4`), what most tools write.
    #[default]
    Microsecond,
    /// Nanoseconds (magic `a1b23c4d`).
    Nanosecond,
}

/// How a [`CaptureWriter`] writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterOptions {
    /// Timestamp resolution.
    pub precision: TimestampPrecision,
    /// VLAN tags on every frame.
    pub vlan: VlanTags,
}

/// Writes UDP datagrams from one source to one destination as a classic pcap file.
pub struct CaptureWriter<W: Write> {
    out: W,
    frames: FrameBuilder,
    precision: TimestampPrecision,
}

impl CaptureWriter<BufWriter<File>> {
    /// Creates (or truncates) the file at `path`, with default options.
    pub fn create(
        path: impl AsRef<Path>,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Result<Self, WriteError> {
        Self::create_with(path, src, dst, WriterOptions::default())
    }

    /// Creates (or truncates) the file at `path`, with `options`.
    pub fn create_with(
        path: impl AsRef<Path>,
        src: SocketAddr,
        dst: SocketAddr,
        options: WriterOptions,
    ) -> Result<Self, WriteError> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| WriteError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        Self::with_options(BufWriter::new(file), src, dst, options)
    }
}

impl<W: Write> CaptureWriter<W> {
    /// Writes the file header to `out`, with default options.
    pub fn new(out: W, src: SocketAddr, dst: SocketAddr) -> Result<Self, WriteError> {
        Self::with_options(out, src, dst, WriterOptions::default())
    }

    /// Writes the file header to `out`, with `options`.
    pub fn with_options(
        mut out: W,
        src: SocketAddr,
        dst: SocketAddr,
        options: WriterOptions,
    ) -> Result<Self, WriteError> {
        let frames = FrameBuilder::new(src, dst, options.vlan)?;
        let magic: u32 = match options.precision {
            TimestampPrecision::Microsecond => 0xa1b2_c3d4,
            TimestampPrecision::Nanosecond => 0xa1b2_3c4d,
        };
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&magic.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        header.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        header.extend_from_slice(&(MAX_CAPLEN as u32).to_le_bytes());
        header.extend_from_slice(&u32::from(link_type::ETHERNET).to_le_bytes());
        out.write_all(&header)?;
        Ok(Self {
            out,
            frames,
            precision: options.precision,
        })
    }

    /// Writes `payload` as one UDP datagram in one frame.
    pub fn write_datagram(
        &mut self,
        timestamp: Duration,
        payload: &[u8],
    ) -> Result<(), WriteError> {
        let frame = self.frames.datagram(payload)?;
        self.write_frame(timestamp, &frame)
    }

    /// Writes `payload` as one UDP datagram cut into IP fragments carrying at most
    /// `fragment_payload_size` bytes (a multiple of 8) each; returns the number of frames.
    pub fn write_fragmented(
        &mut self,
        timestamp: Duration,
        payload: &[u8],
        fragment_payload_size: usize,
    ) -> Result<usize, WriteError> {
        let frames = self.frames.fragments(payload, fragment_payload_size)?;
        for frame in &frames {
            self.write_frame(timestamp, frame)?;
        }
        Ok(frames.len())
    }

    /// Builds (without writing) the frame [`Self::write_datagram`] would write.
    pub fn datagram_frame(&mut self, payload: &[u8]) -> Result<Vec<u8>, WriteError> {
        self.frames.datagram(payload)
    }

    /// Builds (without writing) the fragment frames [`Self::write_fragmented`] would write,
    /// so tests can reorder, repeat or drop them before [`Self::write_frame`].
    pub fn fragment_frames(
        &mut self,
        payload: &[u8],
        fragment_payload_size: usize,
    ) -> Result<Vec<Vec<u8>>, WriteError> {
        self.frames.fragments(payload, fragment_payload_size)
    }

    /// Writes any Ethernet frame as one record.
    pub fn write_frame(&mut self, timestamp: Duration, frame: &[u8]) -> Result<(), WriteError> {
        if frame.len() > MAX_CAPLEN {
            return Err(WriteError::PayloadTooLarge {
                len: frame.len(),
                max: MAX_CAPLEN,
            });
        }
        let secs = u32::try_from(timestamp.as_secs())
            .map_err(|_| WriteError::TimestampOutOfRange(timestamp))?;
        let frac = match self.precision {
            TimestampPrecision::Microsecond => timestamp.subsec_micros(),
            TimestampPrecision::Nanosecond => timestamp.subsec_nanos(),
        };
        let len = frame.len() as u32;
        let mut head = [0u8; 16];
        head[0..4].copy_from_slice(&secs.to_le_bytes());
        head[4..8].copy_from_slice(&frac.to_le_bytes());
        head[8..12].copy_from_slice(&len.to_le_bytes());
        head[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(frame)?;
        Ok(())
    }

    /// Flushes buffered records to the output.
    pub fn flush(&mut self) -> Result<(), WriteError> {
        self.out.flush()?;
        Ok(())
    }

    /// Flushes and returns the output.
    pub fn into_inner(mut self) -> Result<W, WriteError> {
        self.out.flush()?;
        Ok(self.out)
    }
}
