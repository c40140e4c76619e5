//! Reading `records.jsonl` one line at a time through a bounded buffer, so the ledger and
//! `status` take the same memory for a record log of any length.

use std::io::{self, BufRead, BufReader, Read};

/// Longest record line read; a longer line (no record the receiver writes is near it) is
/// skipped whole without being held.
pub const MAX_RECORD_LINE: usize = 1 << 20;
/// Bytes read from the file at a time.
const READ_CHUNK: usize = 64 << 10;

/// Calls `each` with every line of `reader` (without its newline, a last unterminated line
/// included) up to [`MAX_RECORD_LINE`] bytes; returns how many longer lines were skipped.
pub fn for_each_line<R: Read>(reader: R, mut each: impl FnMut(&[u8])) -> io::Result<u64> {
    let mut input = BufReader::with_capacity(READ_CHUNK, reader);
    let mut line: Vec<u8> = Vec::new();
    let mut too_long = false;
    let mut skipped = 0u64;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            if too_long {
                skipped += 1;
            } else if !line.is_empty() {
                each(&line);
            }
            return Ok(skipped);
        }
        let (part, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + part.len() > MAX_RECORD_LINE {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(part);
            }
        }
        let used = end.unwrap_or(buf.len());
        if end.is_some() {
            if too_long {
                skipped += 1;
            } else {
                each(&line);
            }
            line.clear();
            too_long = false;
        }
        input.consume(used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> (Vec<Vec<u8>>, u64) {
        let mut out = Vec::new();
        let skipped = for_each_line(input, |l| out.push(l.to_vec())).unwrap();
        (out, skipped)
    }

    #[test]
    fn splits_lines_keeps_an_unterminated_last_one_and_skips_overlong_ones() {
        assert_eq!(lines(b""), (vec![], 0));
        assert_eq!(
            lines(b"a\n\nbc\nd"),
            (
                vec![b"a".to_vec(), vec![], b"bc".to_vec(), b"d".to_vec()],
                0
            )
        );
        let mut big = vec![b'x'; MAX_RECORD_LINE + 1];
        big.extend_from_slice(b"\nafter\n");
        big.extend(vec![b'y'; MAX_RECORD_LINE + 5]);
        assert_eq!(lines(&big), (vec![b"after".to_vec()], 2));
        let exact = vec![b'z'; MAX_RECORD_LINE];
        assert_eq!(lines(&exact), (vec![exact.clone()], 0));
    }
}
