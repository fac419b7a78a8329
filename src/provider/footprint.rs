//! How many bytes a job's answer may weigh, and how much memory the job
//! holds at its peak: the bounds behind the response cap and the worker's
//! limit on image bytes in flight.
//!
//! The bound is the worst case the request allows, not a guess: an image
//! of `W x H` is at most its raw RGBA pixels plus the PNG framing (a PNG
//! that does not compress, as `genq sim` sends), base64 adds a third, and
//! the JSON around the images is small. A job's peak is its answer twice
//! (the body while it is parsed, and the parsed text) plus one decoded
//! image (images are decoded and written one at a time).

use serde_json::Value;

use super::catalog::image_count;

/// The size assumed for `auto` and for sizes that cannot be read: the
/// largest any model accepts (3840x2160).
const LARGEST: (u64, u64) = (3840, 2160);
/// The JSON around the images: usage, revised prompts (up to a prompt's
/// 32,000 characters each), format fields.
const ENVELOPE: u64 = 64 * 1024;

/// Most bytes one image of `params` can take as a file.
pub fn max_image_bytes(params: &Value) -> u64 {
    let (w, h) = pixels(params);
    let raw = w * h * 4 + h; // RGBA, plus one filter byte per row
    raw + raw / 65_535 * 5 + 1024 // stored deflate blocks, chunks, headers
}

/// Most bytes the provider's answer to `params` can take (base64 in JSON).
pub fn max_answer_bytes(params: &Value) -> u64 {
    let n = u64::from(image_count(params));
    n * (max_image_bytes(params).div_ceil(3) * 4 + ENVELOPE) + ENVELOPE
}

/// Most memory a job of `params` holds at once: the answer while it is
/// parsed and after, and one decoded image.
pub fn peak_bytes(params: &Value) -> u64 {
    2 * max_answer_bytes(params) + max_image_bytes(params)
}

fn pixels(params: &Value) -> (u64, u64) {
    let size = params
        .get("size")
        .and_then(Value::as_str)
        .unwrap_or("1024x1024");
    size.split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u64>().ok()?, h.parse::<u64>().ok()?)))
        .filter(|(w, h)| (1..=LARGEST.0).contains(w) && (1..=LARGEST.0).contains(h))
        .unwrap_or(LARGEST)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn bounds_follow_size_and_count() {
        // (params, image bound in MiB, answer bound in MiB), rounded down
        let cases = [
            (json!({}), 4, 5),
            (json!({"size": "1024x1024", "n": 2}), 4, 10),
            (json!({"size": "1536x1024", "n": 10}), 6, 80),
            (json!({"size": "auto"}), 31, 42),
            (json!({"size": "99999x1"}), 31, 42),
            (json!({"size": "3840x2160", "n": 1}), 31, 42),
        ];
        for (params, image, answer) in cases {
            assert_eq!(max_image_bytes(&params) / MIB, image, "{params}");
            assert_eq!(max_answer_bytes(&params) / MIB, answer, "{params}");
        }
    }

    #[test]
    fn a_real_uncompressed_png_fits_its_bound() {
        for (w, h) in [(1024, 1024), (1536, 1024), (64, 64)] {
            let png = genq_sim::png::solid(w, h, [1, 2, 3, 255]);
            let params = json!({ "size": format!("{w}x{h}") });
            let bound = max_image_bytes(&params);
            assert!(
                png.len() as u64 <= bound,
                "{w}x{h}: {} > {bound}",
                png.len()
            );
            // and not wildly above it
            assert!(bound - (png.len() as u64) < 2048, "{w}x{h}");
        }
        let peak = peak_bytes(&json!({"size": "1536x1024", "n": 10}));
        assert_eq!(peak / MIB, 167);
    }
}
