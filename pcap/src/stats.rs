//! Counters kept while reading a capture: what was read, what was yielded, and why every
//! other frame was ignored.

/// What a [`crate::CaptureReader`] has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Bytes of the capture file consumed.
    pub bytes: u64,
    /// Packet records read (classic records, pcapng enhanced/simple/obsolete packet blocks).
    pub records: u64,
    /// pcapng blocks that carry no packet (section headers, interfaces, statistics, ...).
    pub other_blocks: u64,
    /// UDP datagrams yielded.
    pub datagrams: u64,
    /// UDP payload bytes yielded.
    pub payload_bytes: u64,
    /// Frames on a link type this crate does not decode.
    pub ignored_link_type: u64,
    /// Frames that carry no IP packet (ARP, LLC, unknown address family, ...).
    pub ignored_not_ip: u64,
    /// IP packets that carry no UDP.
    pub ignored_not_udp: u64,
    /// Frames with inconsistent link, IP or UDP headers or lengths.
    pub malformed: u64,
    /// Frames cut by the capture's snaplen (captured length below wire length).
    pub snaplen_truncated: u64,
    /// Frames larger than the 256 KiB a capture record may hold, skipped unread.
    pub oversized: u64,
    /// IPv4 headers with a wrong header checksum.
    pub bad_ip_checksums: u64,
    /// UDP datagrams with a wrong checksum (common in captures taken on a host with
    /// checksum offload).
    pub bad_udp_checksums: u64,
    /// Datagrams not yielded because of a bad checksum (see [`crate::ReaderConfig`]).
    pub dropped_bad_checksum: u64,
    /// IP fragments seen.
    pub fragments: u64,
    /// Fragments ignored as exact duplicates of one already held.
    pub fragments_duplicate: u64,
    /// Fragments discarded: overlapping, over a limit, expired, or incomplete at the end.
    pub fragments_dropped: u64,
    /// Datagrams given up on (expired, evicted, overlapping, or incomplete at the end).
    pub reassemblies_abandoned: u64,
    /// Datagrams reassembled from fragments.
    pub reassembled: u64,
    /// Fragments held right now, waiting for the rest of their datagram.
    pub fragments_pending: u64,
    /// Bytes held right now for pending fragments.
    pub fragment_bytes_pending: u64,
}

impl ReaderStats {
    /// Frames read but not yielded as (part of) a datagram, all reasons together.
    pub fn frames_ignored(&self) -> u64 {
        self.ignored_link_type
            + self.ignored_not_ip
            + self.ignored_not_udp
            + self.malformed
            + self.snaplen_truncated
            + self.oversized
            + self.dropped_bad_checksum
    }
}
