//! What kind of image a file is, judged by its first bytes (never by its
//! name or a declared type): the Images API takes PNG, JPEG and WebP.

/// An image format the Images API accepts as an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
    Webp,
}

impl ImageFormat {
    /// The format `bytes` begin with, if it is one the API accepts.
    pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageFormat::Jpeg)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(ImageFormat::Webp)
        } else {
            None
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Webp => "image/webp",
        }
    }

    /// The extension a file of this format is sent with.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Webp => "webp",
        }
    }

    /// The format of a stored `content_type`.
    pub fn from_content_type(content_type: &str) -> Option<ImageFormat> {
        [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Webp]
            .into_iter()
            .find(|f| f.content_type() == content_type)
    }
}

/// What a file that is not an accepted image looks like, for an error.
pub fn describe_unaccepted(bytes: &[u8]) -> &'static str {
    if bytes.is_empty() {
        "an empty file"
    } else if bytes.starts_with(b"GIF8") {
        "a GIF"
    } else if bytes.starts_with(b"%PDF") {
        "a PDF"
    } else if bytes.starts_with(b"<") || bytes.starts_with(b"\xEF\xBB\xBF<") {
        "HTML or XML"
    } else {
        "not a PNG, JPEG or WebP image"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_known_by_their_bytes() {
        let cases: [(&[u8], Option<ImageFormat>); 7] = [
            (b"\x89PNG\r\n\x1a\nIHDR", Some(ImageFormat::Png)),
            (&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10], Some(ImageFormat::Jpeg)),
            (b"RIFF\x24\0\0\0WEBPVP8 ", Some(ImageFormat::Webp)),
            (b"RIFF\x24\0\0\0WAVEfmt ", None),
            (b"GIF89a", None),
            (b"\x89PNG", None),
            (b"", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(ImageFormat::sniff(bytes), want, "{bytes:?}");
        }
        assert_eq!(describe_unaccepted(b"GIF89a..."), "a GIF");
        assert_eq!(describe_unaccepted(b"<html>"), "HTML or XML");
        assert_eq!(
            ImageFormat::from_content_type("image/webp"),
            Some(ImageFormat::Webp)
        );
    }
}
