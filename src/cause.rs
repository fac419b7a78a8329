//! An error told with its causes. Libraries wrap: reqwest says "error
//! sending request", sqlx says "pool timed out"; what failed (a refused
//! connection, an untrusted certificate) sits further down the `source()`
//! chain, and an operator needs it in `last_error`, not in a debug log.

use std::error::Error;

/// `err` and each of its sources, joined with ": ". A source whose text the
/// line already holds (many wrappers repeat their cause) is not repeated.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    fn layers(texts: &[&'static str]) -> Layer {
        let mut inner: Option<Box<Layer>> = None;
        for text in texts.iter().rev() {
            inner = Some(Box::new(Layer(text, inner)));
        }
        *inner.unwrap()
    }

    #[test]
    fn the_root_cause_is_told_once() {
        let cases: &[(&[&'static str], &str)] = &[
            (&["alone"], "alone"),
            (
                &[
                    "error sending request",
                    "client error (Connect)",
                    "tcp connect error",
                    "Connection refused (os error 111)",
                ],
                "error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)",
            ),
            (
                &[
                    "io error: invalid peer certificate: UnknownIssuer",
                    "invalid peer certificate: UnknownIssuer",
                ],
                "io error: invalid peer certificate: UnknownIssuer",
            ),
            (&["outer", ""], "outer"),
        ];
        for (texts, want) in cases {
            assert_eq!(chain(&layers(texts)), *want);
        }
    }
}
