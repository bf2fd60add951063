//! A throwaway nkey user seed, for `nats-server -t` on configurations that read one from
//! the environment (nats-server rejects a seed that is not well formed, so a placeholder
//! will not do). Made afresh on every run from random bytes and never stored: no
//! manifest holds a seed.

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// CRC-16/XMODEM, the checksum nkeys end with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// RFC 4648 base32 without padding, as nkeys are written.
fn base32(data: &[u8]) -> String {
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in data {
        buffer = ((buffer << 8) | u32::from(byte)) & 0xffff;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// A new user seed (`SU…`): the seed and user prefixes, 32 random bytes, the checksum.
pub fn user_seed() -> String {
    const SEED: u8 = 18 << 3;
    const USER: u8 = 20 << 3;
    let mut raw = vec![SEED | (USER >> 5), (USER & 31) << 3];
    raw.extend(rand::random::<u128>().to_le_bytes());
    raw.extend(rand::random::<u128>().to_le_bytes());
    let crc = crc16(&raw);
    raw.extend(crc.to_le_bytes());
    base32(&raw)
}

/// Whether `token` has the shape of an nkey seed: `S` and a key type, 58 base32 characters.
pub fn looks_like_a_seed(token: &str) -> bool {
    token.len() == 58
        && token.bytes().all(|b| BASE32.contains(&b))
        && token.starts_with('S')
        && b"UAONCPX".contains(&token.as_bytes()[1])
}

#[test]
fn a_new_seed_has_the_shape_of_one() {
    let seed = user_seed();
    assert!(seed.starts_with("SU"), "{seed}");
    assert!(looks_like_a_seed(&seed), "{seed}");
    assert_ne!(seed, user_seed());
    // The RFC 4648 test vector.
    assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
}
