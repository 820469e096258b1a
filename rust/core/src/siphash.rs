//! SipHash-2-4 with a 128-bit output: the identity of a key in the keyed limiters.
//!
//! A keyed limiter stores the 128-bit keyed hash of each key instead of the key itself, so a
//! key costs 16 bytes however long it is. The hash key is secret and random per limiter:
//! callers who choose the keys (user names, client addresses) cannot aim at one shard, one
//! probe chain, or a collision. Two different keys share an identity with probability about
//! `n² / 2¹²⁹` for `n` keys (below 10⁻²⁶ at a million keys).
//!
//! Written from the SipHash paper (Aumasson and Bernstein, 2012); checked against its
//! reference vectors and against the standard library's 64-bit SipHash-2-4.

use std::hash::BuildHasher;

/// The secret 128-bit key of one hasher.
#[derive(Clone, Copy, Debug)]
pub struct SipKey {
    k0: u64,
    k1: u64,
}

#[inline(always)]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

impl SipKey {
    pub const fn new(k0: u64, k1: u64) -> Self {
        Self { k0, k1 }
    }

    /// A key drawn from the operating system's randomness (through the standard library's
    /// per-process random hasher keys, themselves secret).
    pub fn random() -> Self {
        let seed = std::collections::hash_map::RandomState::new();
        Self::new(seed.hash_one(0x5eed_u64), seed.hash_one(0xc0ffee_u64))
    }

    /// Compresses `data` and returns the state before finalization.
    #[inline(always)]
    fn compress(&self, data: &[u8], wide: bool) -> [u64; 4] {
        let mut v = [
            self.k0 ^ 0x736f_6d65_7073_6575,
            self.k1 ^ 0x646f_7261_6e64_6f6d,
            self.k0 ^ 0x6c79_6765_6e65_7261,
            self.k1 ^ 0x7465_6462_7974_6573,
        ];
        if wide {
            v[1] ^= 0xee;
        }
        let mut blocks = data.chunks_exact(8);
        for block in &mut blocks {
            let m = u64::from_le_bytes(block.try_into().expect("8-byte chunk"));
            v[3] ^= m;
            round(&mut v);
            round(&mut v);
            v[0] ^= m;
        }
        let mut last = [0u8; 8];
        let tail = blocks.remainder();
        last[..tail.len()].copy_from_slice(tail);
        // The last block carries the message length (mod 256) in its top byte.
        let m = u64::from_le_bytes(last) | ((data.len() as u64) << 56);
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
        v
    }

    /// SipHash-2-4 with 64 bits of output.
    pub fn hash64(&self, data: &[u8]) -> u64 {
        let mut v = self.compress(data, false);
        v[2] ^= 0xff;
        for _ in 0..4 {
            round(&mut v);
        }
        v[0] ^ v[1] ^ v[2] ^ v[3]
    }

    /// SipHash-2-4 with 128 bits of output, as two words (low, high).
    #[inline]
    pub fn hash128(&self, data: &[u8]) -> [u64; 2] {
        let mut v = self.compress(data, true);
        v[2] ^= 0xee;
        for _ in 0..4 {
            round(&mut v);
        }
        let low = v[0] ^ v[1] ^ v[2] ^ v[3];
        v[1] ^= 0xdd;
        for _ in 0..4 {
            round(&mut v);
        }
        [low, v[0] ^ v[1] ^ v[2] ^ v[3]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE_KEY: SipKey = SipKey::new(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);

    fn bytes128(h: [u64; 2]) -> Vec<u8> {
        let mut out = h[0].to_le_bytes().to_vec();
        out.extend_from_slice(&h[1].to_le_bytes());
        out
    }

    #[test]
    fn matches_the_papers_128_bit_vectors() {
        // vectors_sip128[0..4] of the reference implementation: key 00..0f, message 00..(n-1).
        let expected: [[u8; 16]; 4] = [
            [
                0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55,
                0x02, 0x93,
            ],
            [
                0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b, 0x22,
                0xfc, 0x45,
            ],
            [
                0x81, 0x77, 0x22, 0x8d, 0xa4, 0xa4, 0x5d, 0xc7, 0xfc, 0xa3, 0x8b, 0xde, 0xf6, 0x0a,
                0xff, 0xe4,
            ],
            [
                0x9c, 0x70, 0xb6, 0x0c, 0x52, 0x67, 0xa9, 0x4e, 0x5f, 0x33, 0xb6, 0xb0, 0x29, 0x85,
                0xed, 0x51,
            ],
        ];
        let message: Vec<u8> = (0..4).collect();
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(
                bytes128(REFERENCE_KEY.hash128(&message[..n])),
                want,
                "length {n}"
            );
        }
    }

    #[test]
    #[allow(deprecated)] // the standard library's SipHasher is SipHash-2-4: the reference
    fn matches_the_standard_librarys_64_bit_siphash_at_every_length() {
        use std::hash::Hasher;
        let key = SipKey::new(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        let message: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
        for n in 0..message.len() {
            let mut reference = std::hash::SipHasher::new_with_keys(key.k0, key.k1);
            reference.write(&message[..n]);
            assert_eq!(key.hash64(&message[..n]), reference.finish(), "length {n}");
        }
    }

    #[test]
    fn random_keys_differ() {
        let (a, b) = (SipKey::random(), SipKey::random());
        assert_ne!(a.hash128(b"user:1"), b.hash128(b"user:1"));
    }
}
