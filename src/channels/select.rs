//! Picking channels for one request: lowest priority number first, weighted
//! random inside a priority tier, never the same channel twice.

use super::Channel;
use rand::Rng;
use std::sync::Arc;

/// The channels one request may still try.
pub struct Selection {
    remaining: Vec<Arc<Channel>>,
}

impl Selection {
    pub fn new(candidates: Vec<Arc<Channel>>) -> Selection {
        Selection { remaining: candidates }
    }

    pub fn is_empty(&self) -> bool {
        self.remaining.is_empty()
    }

    /// Takes the next channel to try.
    pub fn take_next(&mut self) -> Option<Arc<Channel>> {
        let best = self.remaining.iter().map(|c| c.cfg.priority).min()?;
        let tier: Vec<usize> = (0..self.remaining.len()).filter(|&i| self.remaining[i].cfg.priority == best).collect();
        let total: u64 = tier.iter().map(|&i| self.remaining[i].cfg.weight as u64).sum();
        let mut pick = rand::thread_rng().gen_range(0..total.max(1));
        let mut chosen = tier[0];
        for &i in &tier {
            let w = self.remaining[i].cfg.weight as u64;
            if pick < w {
                chosen = i;
                break;
            }
            pick -= w;
        }
        Some(self.remaining.swap_remove(chosen))
    }
}
