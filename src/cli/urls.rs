//! `--allow-private-urls` (`GENQ_ALLOW_PRIVATE_URLS`): whether an edit's
//! input URLs may point at loopback, private or link-local addresses. Off,
//! they are refused at submit (`genq submit`, `POST /v1/jobs`) and again
//! when a worker fetches.

use clap::Args;
use genq::UrlPolicy;

#[derive(Args, Clone, Copy)]
pub struct UrlArgs {
    /// Let edits fetch input URLs on loopback, private and link-local
    /// addresses (refused otherwise, at submit and when a worker fetches).
    #[arg(long, env = "GENQ_ALLOW_PRIVATE_URLS", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub allow_private_urls: bool,
}

impl UrlArgs {
    pub fn policy(self) -> UrlPolicy {
        UrlPolicy {
            allow_private: self.allow_private_urls,
        }
    }
}
