//! The push path's HTTP answer reader on arbitrary bytes, cut into arbitrary reads.
//!
//! Input: byte 0 chooses the reads (0: everything in one, 1: a byte at a time, anything
//! else: random sizes from 1 to it), the rest is what the server sends. Checks:
//! - reading never panics, however the bytes are cut;
//! - the cut does not matter: the answer, or the error, is the one read when everything
//!   arrives at once, and a connection that stays usable then stays usable too (cut, the
//!   reader may see fewer bytes after the body, which the idle check sees later);
//! - an answer is a final one (not 1xx) with a three-digit status, a `Retry-After` of
//!   one line, and a body of at most `MAX_BODY` bytes as read (as characters: invalid
//!   UTF-8 turns into U+FFFD, three bytes for one).

use std::io::{self, Read};

use crate::push::http::{read_answer, Answer, Error, MAX_BODY};

/// Hands out the input in reads of sizes from a small xorshift seeded by `seed`: 0 is
/// everything at once, 1 is one byte at a time, anything else is sizes from 1 to `seed`.
struct Cuts<'a> {
    data: &'a [u8],
    seed: u8,
    state: u32,
}

impl Read for Cuts<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = match self.seed {
            0 => self.data.len(),
            seed => {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 17;
                self.state ^= self.state << 5;
                1 + (self.state % u32::from(seed)) as usize
            }
        };
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn read(seed: u8, data: &[u8]) -> Result<(Answer, bool), Error> {
    let mut cuts = Cuts {
        data,
        seed,
        state: u32::from(seed) | 0x5a00,
    };
    read_answer(&mut cuts, &mut Vec::new())
}

/// Checks one input (see the module's documentation).
pub fn http_answer(data: &[u8]) {
    let Some((&seed, answer)) = data.split_first() else {
        return;
    };
    let whole = read(0, answer);
    let cut = read(seed, answer);
    match (&whole, &cut) {
        (Ok((a, whole_reusable)), Ok((b, cut_reusable))) => {
            assert_eq!(a, b);
            assert!(!whole_reusable || *cut_reusable);
            assert!(
                (200..=999).contains(&a.status) || a.status < 100,
                "{}",
                a.status
            );
            assert!(a.body.chars().count() <= MAX_BODY);
            if let Some(retry_after) = &a.retry_after {
                assert!(!retry_after.contains(['\r', '\n']), "{retry_after:?}");
            }
        }
        _ => assert_eq!(format!("{whole:?}"), format!("{cut:?}")),
    }
}
