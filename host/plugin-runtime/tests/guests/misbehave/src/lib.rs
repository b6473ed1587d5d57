//! A filter that misbehaves the way its config asks, for the host's fault
//! tests: `loop` spins forever, `hog` allocates without bound, `trap` hits an
//! `unreachable`, `panic` panics, `spin:N` spins N rounds and keeps the event
//! (a slow but well-behaved filter), `ok` keeps the event.

wit_bindgen::generate!({ world: "filter-plugin", path: "../../../../../wit" });

use exports::hookhost::plugin::filter::Guest;
use hookhost::plugin::types::Event;

struct Misbehave;

impl Guest for Misbehave {
    fn keep(event: Event, config: String) -> Result<bool, String> {
        // The mode, bare or as a JSON string: `loop` or `"loop"`.
        match config.trim().trim_matches('"') {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                // Reserve without touching: grows linear memory fast, so the
                // memory limit, not the CPU limit, is what stops it.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut chunk = Vec::<u8>::with_capacity(1 << 20);
                    chunk.push(1);
                    hoard.push(chunk);
                    std::hint::black_box(&hoard);
                }
            }
            // Only built for wasm32; `cargo clippy --workspace` also checks
            // it on the host, where a panic stands in for the trap.
            #[cfg(target_arch = "wasm32")]
            "trap" => core::arch::wasm32::unreachable(),
            #[cfg(not(target_arch = "wasm32"))]
            "trap" => unreachable!("trap"),
            mode if mode.starts_with("spin:") => {
                let rounds: u64 = mode[5..]
                    .parse()
                    .map_err(|_| format!("bad mode {mode:?}"))?;
                let mut n: u64 = 0;
                for _ in 0..rounds {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
                Ok(true)
            }
            "panic" => panic!("misbehave was asked to panic on {}", event.id),
            _ => Ok(true),
        }
    }
}

export!(Misbehave);
