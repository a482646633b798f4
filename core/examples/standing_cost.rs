//! What one computation of rater standing costs with N names (`bench/hostile.py` runs it):
//! raters each vouching for up to 100 names (the aggregator's `max_vouches_per_rater`), most of
//! them invented, dangling names that vouch for nobody.
//!
//! cargo run --profile server -p mcp-warden-core --example standing_cost -- 3000 30000
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use mcp_warden_core::trust::model::{rater_standing, Vouch};
use mcp_warden_core::trust::TrustParams;
use std::collections::BTreeSet;
use std::time::Instant;

fn main() {
    let p = TrustParams::default();
    let pre: BTreeSet<String> = ["ops".to_string()].into();
    for arg in std::env::args().skip(1) {
        let names: usize = arg.parse().expect("a number of names");
        let raters = names.div_ceil(100);
        let mut vouches: Vec<Vouch> = (0..raters).map(|r| Vouch { from: "ops".into(), to: format!("rater-{r}"), value: 1.0 }).collect();
        for i in 0..names {
            vouches.push(Vouch { from: format!("rater-{}", i % raters), to: format!("name-{i}"), value: 1.0 });
        }
        let runs = 5;
        let t0 = Instant::now();
        let mut n = 0;
        for _ in 0..runs {
            n = rater_standing(&pre, &vouches, &p).len();
        }
        let ms = t0.elapsed().as_secs_f64() * 1000.0 / runs as f64;
        println!("{{\"names\": {n}, \"vouches\": {}, \"standing_ms\": {ms:.2}}}", vouches.len());
    }
}
