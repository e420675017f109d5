//! Estimates made before the upstream reports usage: the reservation taken at
//! admission, and the usage billed when a stream ends without a report (client
//! disconnect, upstream failure).

use crate::api::Protocol;
use crate::config::{BillingConfig, Price};
use crate::usage::Usage;

/// Input tokens assumed for a body of `body_len` bytes. Three bytes per token
/// is above the real count for English text (about four) and JSON overhead
/// only adds bytes, so this errs towards reserving more.
pub fn input_tokens(body_len: usize) -> u64 {
    (body_len as u64).div_ceil(3)
}

/// Output tokens assumed from `chars` bytes of streamed text (about four per token).
pub fn output_tokens(chars: u64) -> u64 {
    chars.div_ceil(4)
}

/// Micro-credits held before forwarding: uncached input at the input price
/// plus the output cap at the output price, bounded by
/// `billing.max_reservation`, and never zero (so an account with nothing left
/// is refused even for the cheapest request).
pub fn reservation(
    body_len: usize,
    max_output: Option<u64>,
    protocol: Protocol,
    price: &Price,
    cfg: &BillingConfig,
) -> i64 {
    let output = match protocol {
        Protocol::Embeddings | Protocol::CountTokens => 0,
        _ => max_output.unwrap_or(cfg.default_max_output_tokens),
    };
    let worst = Usage { input: input_tokens(body_len), output, ..Default::default() }.cost(price);
    worst.min(cfg.max_reservation).max(1)
}

/// Usage to bill when a stream ended before the upstream reported it in full:
/// whatever was reported, with output at least what the streamed text implies.
pub fn incomplete(reported: Option<Usage>, body_len: usize, output_chars: u64) -> Usage {
    let mut u = reported.unwrap_or(Usage { input: input_tokens(body_len), ..Default::default() });
    if u.prompt_total() == 0 {
        u.input = input_tokens(body_len);
    }
    u.output = u.output.max(output_tokens(output_chars));
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BillingConfig {
        BillingConfig {
            utc_offset_secs: 0,
            default_concurrency: 4,
            max_reservation: 1_000_000,
            default_max_output_tokens: 4096,
            redeem_failures_per_10min: 10,
        }
    }

    #[test]
    fn reservation_is_input_plus_output_cap() {
        let price = Price { input: 3_000_000, cached_input: 300_000, cache_write: 3_750_000, output: 15_000_000 };
        // 3000 bytes -> 1000 tokens * 3 + 100 * 15 = 3000 + 1500 micro.
        assert_eq!(reservation(3000, Some(100), Protocol::Messages, &price, &cfg()), 4500);
        // No cap given: the default output cap.
        assert_eq!(reservation(3, None, Protocol::Chat, &price, &cfg()), 3 + 4096 * 15);
        // Embeddings have no output; the cap bounds it; never zero.
        assert_eq!(reservation(3000, Some(100), Protocol::Embeddings, &price, &cfg()), 3000);
        assert_eq!(reservation(3_000_000, Some(100_000), Protocol::Chat, &price, &cfg()), 1_000_000);
        assert_eq!(reservation(10, None, Protocol::CountTokens, &Price::default(), &cfg()), 1);
    }

    #[test]
    fn incomplete_streams() {
        let reported = Usage { input: 100, cache_read: 50, output: 1, ..Default::default() };
        let u = incomplete(Some(reported), 999, 400);
        assert_eq!((u.input, u.cache_read, u.output), (100, 50, 100));
        let u = incomplete(None, 300, 8);
        assert_eq!((u.input, u.output), (100, 2));
    }
}
