//! A tiny PNG encoder so the simulator can return real, decodable images without an image
//! crate: one solid colour, RGBA, zlib *stored* (uncompressed) blocks, with CRC-32 and
//! Adler-32 computed here.

/// The eight bytes every PNG file starts with.
pub const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// Largest payload of one stored deflate block.
const MAX_STORED: usize = 65_535;

/// Encodes a `width` x `height` image filled with `rgba` as PNG bytes.
pub fn solid(width: u32, height: u32, rgba: [u8; 4]) -> Vec<u8> {
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // bit depth 8, colour type 6 (RGBA), deflate, adaptive filtering, no interlace
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);

    // each scanline: filter type 0 (none), then the pixels
    let mut row = vec![0u8];
    row.extend(rgba.iter().copied().cycle().take(4 * width as usize));
    let raw = row.repeat(height as usize);

    let mut out = SIGNATURE.to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib_stored(&raw));
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Appends one chunk: length, type, data, CRC-32 over type and data.
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Wraps `data` in a zlib stream made of stored deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01]; // deflate, 32K window, no dictionary; (0x7801 % 31 == 0)
    let mut blocks = data.chunks(MAX_STORED).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none())); // BFINAL on the last, BTYPE 00
        let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) as PNG uses it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

/// Adler-32 as zlib uses it.
pub fn adler32(bytes: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    let (mut a, mut b) = (1u32, 0u32);
    for &x in bytes {
        a = (a + u32::from(x)) % MOD;
        b = (b + a) % MOD;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(bytes: &[u8]) -> u32 {
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    /// Splits a PNG into (type, data) chunks, checking every CRC on the way.
    fn chunks(png: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
        assert_eq!(png[..8], SIGNATURE);
        let mut rest = &png[8..];
        let mut found = Vec::new();
        while !rest.is_empty() {
            let len = be32(rest) as usize;
            let kind: [u8; 4] = rest[4..8].try_into().expect("4 bytes");
            let data = rest[8..8 + len].to_vec();
            assert_eq!(
                be32(&rest[8 + len..]),
                crc32(&rest[4..8 + len]),
                "CRC of {kind:?}"
            );
            found.push((kind, data));
            rest = &rest[12 + len..];
        }
        found
    }

    /// Undoes [`zlib_stored`], checking the header and Adler-32.
    fn inflate_stored(z: &[u8]) -> Vec<u8> {
        assert_eq!(u16::from_be_bytes([z[0], z[1]]) % 31, 0);
        let (mut pos, mut out) = (2, Vec::new());
        loop {
            let last = z[pos] & 1 == 1;
            assert_eq!(z[pos] >> 1, 0, "stored block");
            let len = usize::from(u16::from_le_bytes([z[pos + 1], z[pos + 2]]));
            let nlen = u16::from_le_bytes([z[pos + 3], z[pos + 4]]);
            assert_eq!(!nlen as usize, len);
            out.extend_from_slice(&z[pos + 5..pos + 5 + len]);
            pos += 5 + len;
            if last {
                break;
            }
        }
        assert_eq!(be32(&z[pos..]), adler32(&out));
        out
    }

    #[test]
    fn known_checksums() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn small_image_is_valid() {
        let png = solid(16, 16, [10, 20, 30, 255]);
        assert!(png.starts_with(&SIGNATURE));
        let parts = chunks(&png);
        let kinds: Vec<&[u8; 4]> = parts.iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [b"IHDR", b"IDAT", b"IEND"]);
        assert_eq!(parts[0].1, [0, 0, 0, 16, 0, 0, 0, 16, 8, 6, 0, 0, 0]);
        let raw = inflate_stored(&parts[1].1);
        assert_eq!(raw.len(), 16 * (1 + 16 * 4));
        assert_eq!(raw[..5], [0, 10, 20, 30, 255]);
    }

    #[test]
    fn large_image_spans_several_blocks() {
        let png = solid(200, 100, [1, 2, 3, 4]);
        let parts = chunks(&png);
        assert_eq!(inflate_stored(&parts[1].1).len(), 100 * (1 + 200 * 4));
    }
}
