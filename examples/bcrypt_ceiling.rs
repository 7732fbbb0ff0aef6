//! The machine's bcrypt ceiling, measured: how many bcrypt verifications a second 1, 2, …
//! threads complete together, with nothing else of the service running. The login
//! benchmark compares the service's logins a second with the figure for as many threads as
//! the hashing pool has (one per core by default).
//!
//!   cargo run --release --example bcrypt_ceiling [COST] [SECONDS]   (defaults 12, 10)
//!
//! Computed ceilings (cores ÷ one hash's time) assume that cores scale linearly; on virtual
//! machines they often do not, which only a measurement shows.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

fn main() {
    let mut args = std::env::args().skip(1);
    let cost: u32 = args
        .next()
        .map_or(12, |a| a.parse().expect("COST is a number"));
    let seconds: u64 = args
        .next()
        .map_or(10, |a| a.parse().expect("SECONDS is a number"));
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let hash = bcrypt::hash("a password", cost).expect("bcrypt hashes");
    println!("bcrypt cost {cost}, {seconds} s per step, {cores} cores");
    println!("threads | hashes/s | ms per hash per thread");
    for threads in 1..=cores {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (stop, done, hash) = (stop.clone(), done.clone(), hash.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = bcrypt::verify("a password", &hash);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.join().expect("a hashing thread");
        }
        let elapsed = started.elapsed().as_secs_f64();
        let count = done.load(Ordering::Relaxed) as f64;
        println!(
            "{threads:7} | {:8.2} | {:.0}",
            count / elapsed,
            elapsed * 1000.0 * threads as f64 / count
        );
    }
}
