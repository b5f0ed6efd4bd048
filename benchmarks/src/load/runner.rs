//! Runs one step of a load run: warm-up, then a measured window, closed-loop (a fixed
//! number of workers, each sending its next request when the last one answers) or
//! open-loop (requests due on a schedule, whatever the answers).
//!
//! A request counts when its response arrives inside the window, so requests started
//! during warm-up and answered in the window count, and those still in flight when the
//! window closes do not (they are waited for, so the next step starts on an idle server).

use super::mix::Mix;
use super::rpc::Workload;
use super::schedule::{dispatch, Arrivals, Dispatch};
use super::stats::{Outcome, StepStats};
use marquee_client::Client;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How a step generates load.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// `concurrency` requests always in flight.
    Closed {
        /// Workers, each with one request in flight.
        concurrency: usize,
    },
    /// Requests due at `rate` per second, at most `max_in_flight` at once.
    Open {
        /// Requests per second offered.
        rate: f64,
        /// Exponential gaps instead of even spacing.
        poisson: bool,
        /// Due requests beyond this many in flight are dropped (and counted).
        max_in_flight: usize,
    },
}

/// One step to run.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// How load is generated.
    pub mode: Mode,
    /// Load before the window, not measured.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Seed of the mix draws and the Poisson schedule.
    pub seed: u64,
}

/// The measured window of a step.
#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.from && t < self.until
    }
}

/// Sends one request and records it if it was answered inside the window.
async fn send_and_record(
    workload: &Workload,
    mix_kind: super::mix::RpcKind,
    client: &mut Client,
    window: Window,
    stats: &Mutex<StepStats>,
) {
    let outcome: Outcome = workload.send(mix_kind, client).await;
    if window.contains(Instant::now()) {
        stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(&outcome);
    }
}

/// Runs `step` with requests drawn from `mix`, spread over `clients` (one per connection).
pub async fn run(workload: Arc<Workload>, clients: &[Client], mix: &Mix, step: &Step) -> StepStats {
    workload.rewind();
    let start = Instant::now();
    let window = Window {
        from: start + step.warmup,
        until: start + step.warmup + step.duration,
    };
    let stats = Arc::new(Mutex::new(StepStats::new(&mix.kinds())));
    let mut tasks = JoinSet::new();
    match step.mode {
        Mode::Closed { concurrency } => {
            for worker in 0..concurrency {
                let (workload, stats, mix) =
                    (Arc::clone(&workload), Arc::clone(&stats), mix.clone());
                let mut client = clients[worker % clients.len()].clone();
                let mut rng = StdRng::seed_from_u64(step.seed.wrapping_add(worker as u64));
                tasks.spawn(async move {
                    while Instant::now() < window.until {
                        let kind = mix.sample(&mut rng);
                        send_and_record(&workload, kind, &mut client, window, &stats).await;
                    }
                });
            }
        }
        Mode::Open {
            rate,
            poisson,
            max_in_flight,
        } => {
            // The schedule runs on its own thread with the OS's sleep (tokio's timers
            // tick every millisecond), handing each due request to the runtime.
            let (workload, stats, mix, clients) = (
                Arc::clone(&workload),
                Arc::clone(&stats),
                mix.clone(),
                clients.to_vec(),
            );
            let runtime = tokio::runtime::Handle::current();
            let (rate, seed) = (rate, step.seed);
            tasks = tokio::task::spawn_blocking(move || {
                let mut tasks = JoinSet::new();
                let in_flight = Arc::new(AtomicUsize::new(0));
                let mut rng = StdRng::seed_from_u64(seed);
                for (i, offset) in Arrivals::new(rate, poisson, seed).enumerate() {
                    let due = start + offset;
                    if due >= window.until {
                        break;
                    }
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let kind = mix.sample(&mut rng);
                    let behind = Instant::now().saturating_duration_since(due);
                    let decision =
                        dispatch(behind, in_flight.load(Ordering::Relaxed), max_in_flight);
                    if due >= window.from {
                        let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
                        match decision {
                            Dispatch::Dropped => s.dropped += 1,
                            Dispatch::Late => s.late += 1,
                            Dispatch::OnTime => {}
                        }
                        if decision != Dispatch::Dropped {
                            s.lag.record_duration(behind);
                        }
                    }
                    if decision == Dispatch::Dropped {
                        continue;
                    }
                    in_flight.fetch_add(1, Ordering::Relaxed);
                    let (workload, stats, in_flight) = (
                        Arc::clone(&workload),
                        Arc::clone(&stats),
                        Arc::clone(&in_flight),
                    );
                    let mut client = clients[i % clients.len()].clone();
                    tasks.spawn_on(
                        async move {
                            send_and_record(&workload, kind, &mut client, window, &stats).await;
                            in_flight.fetch_sub(1, Ordering::Relaxed);
                        },
                        &runtime,
                    );
                    while tasks.try_join_next().is_some() {}
                }
                tasks
            })
            .await
            .expect("the open-loop scheduler panicked");
        }
    }
    while tasks.join_next().await.is_some() {}
    let stats = stats.lock().unwrap_or_else(|p| p.into_inner());
    stats.clone()
}
