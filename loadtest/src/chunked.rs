//! HTTP/1.1 chunked transfer decoding for the raw streams the workers read (a streaming
//! response has no length, so servers and proxies send it in chunks, and a proxy may cut the
//! chunks anywhere, even inside an SSE line). The size line is parsed with `httparse`.

/// Decodes a chunked body fed in arbitrary pieces.
#[derive(Default)]
pub struct Chunked {
    /// Bytes of an incomplete size line (or of the CRLF after a chunk).
    pending: Vec<u8>,
    /// Bytes left in the current chunk.
    left: u64,
    /// Expecting the CRLF that follows a chunk's data.
    after_data: bool,
    /// The last (empty) chunk has been read: the response is complete.
    pub done: bool,
}

impl Chunked {
    /// Appends the body bytes found in `input` to `out`. An `Err` means the framing is broken.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !input.is_empty() && !self.done {
            if self.left > 0 {
                let n = (self.left as usize).min(input.len());
                out.extend_from_slice(&input[..n]);
                self.left -= n as u64;
                input = &input[n..];
                self.after_data = self.left == 0;
                continue;
            }
            self.pending.push(input[0]);
            input = &input[1..];
            if !self.pending.ends_with(b"\r\n") {
                if self.pending.len() > 1024 {
                    return Err("a chunk size line longer than 1 KiB".into());
                }
                continue;
            }
            if self.after_data {
                if self.pending != b"\r\n" {
                    return Err("no CRLF after a chunk".into());
                }
                self.after_data = false;
            } else {
                match httparse::parse_chunk_size(&self.pending) {
                    Ok(httparse::Status::Complete((_, 0))) => self.done = true,
                    Ok(httparse::Status::Complete((_, size))) => self.left = size,
                    _ => return Err(format!("bad chunk size line {:?}", String::from_utf8_lossy(&self.pending))),
                }
            }
            self.pending.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Chunked;

    #[test]
    fn decodes_pieces_cut_anywhere() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for cut in 1..wire.len() {
            let (mut c, mut out) = (Chunked::default(), Vec::new());
            c.feed(&wire[..cut], &mut out).unwrap();
            c.feed(&wire[cut..], &mut out).unwrap();
            assert_eq!(out, b"hello, world", "cut at {cut}");
            assert!(c.done);
        }
        assert!(Chunked::default().feed(b"zz\r\n", &mut Vec::new()).is_err());
    }
}
