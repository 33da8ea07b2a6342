//! Where tasks run, as the scale model (`squall simulate`) and the auto
//! backend's placement ([`crate::backend::placement`]) see it: a [`Platform`]
//! (AWS Lambda, the emulated function, this machine's in-process executors)
//! by its latencies, stalls, scaling rate, bandwidth and billing, and the
//! [`Latency`] distributions it draws from. Parameters and their sources:
//! BENCHMARKS.md ("Scale model").

use crate::cost::Prices;
use squall_executor::ShuffleCodec;

/// A distribution of times, by its median and 95th percentile (log-normal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub median: f64,
    pub p95: f64,
}

impl Latency {
    pub const ZERO: Latency = Latency {
        median: 0.0,
        p95: 0.0,
    };

    /// One time drawn at random.
    pub fn draw(&self, rng: &mut fastrand::Rng) -> f64 {
        if self.median <= 0.0 {
            return 0.0;
        }
        let sigma = (self.p95 / self.median).max(1.0).ln() / 1.645;
        // Box-Muller.
        let u1 = rng.f64().max(f64::MIN_POSITIVE);
        let u2 = rng.f64();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        self.median * (sigma * z).exp()
    }
}

/// Where the tasks run, as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Platform {
    pub name: &'static str,
    /// From asking for a task to its handler starting, warm.
    pub invoke: Latency,
    /// Added to a worker's first task (a fresh function process).
    pub cold_start: Latency,
    /// Fresh workers that may start per 10 s (Lambda's scaling rate), each
    /// function.
    pub new_workers_per_10s: usize,
    /// Identical functions the workers are spread over (`--function-count`).
    pub functions: usize,
    /// One object-store request, to its first byte.
    pub request: Latency,
    /// A request that stalls: its chance, and how long (uniform in the range).
    pub stall_probability: f64,
    pub stall_seconds: (f64, f64),
    /// A read not answered after this many seconds is sent again once, the
    /// first answer winning (hedged reads; None: never).
    pub hedge_after: Option<f64>,
    /// Requests a task has in flight at once.
    pub request_concurrency: f64,
    /// Bytes per second one worker reads or writes (None: not a bound).
    pub bandwidth: Option<f64>,
    /// Memory each worker is billed at (None: nothing billed).
    pub memory_mb: Option<u64>,
    pub arch: &'static str,
    /// Compute time on the platform per second measured here.
    pub cpu_factor: f64,
}

impl Platform {
    /// AWS Lambda; parameters and their sources in BENCHMARKS.md ("Scale model").
    pub fn lambda(memory_mb: u64) -> Self {
        Platform {
            name: "lambda",
            invoke: Latency {
                median: 0.027,
                p95: 0.075,
            },
            cold_start: Latency {
                median: 0.25,
                p95: 0.5,
            },
            new_workers_per_10s: 1000,
            functions: 1,
            request: Latency {
                median: 0.027,
                p95: 0.075,
            },
            stall_probability: 1e-4,
            stall_seconds: (1.0, 10.0),
            // Squall's default: past the task's 95th percentile of reads
            // (75 ms here), and never before 250 ms.
            hedge_after: Some(0.25),
            request_concurrency: 16.0,
            bandwidth: Some(150e6),
            memory_mb: Some(memory_mb),
            arch: "x86_64",
            // One vCPU from 1,769 MB: less memory, a share of one.
            cpu_factor: (1769.0 / memory_mb.max(1) as f64).max(1.0),
        }
    }

    /// How the engine compresses shuffle files where this platform's tasks
    /// write them: with zstd in an object store reached over a network (a
    /// request has a latency), with LZ4 on this machine. The measured runs
    /// a prediction is made from write them so, so that their bytes and
    /// compute are the platform's.
    pub fn shuffle_codec(&self) -> ShuffleCodec {
        if self.request.median > 0.0 {
            ShuffleCodec::Zstd
        } else {
            ShuffleCodec::Lz4
        }
    }

    /// Fresh workers that may start per 10 s over all its functions.
    pub fn scaling_per_10s(&self) -> usize {
        self.new_workers_per_10s
            .saturating_mul(self.functions.max(1))
    }

    /// What a GB-second of its workers costs.
    pub fn gb_second_usd(&self, prices: &Prices) -> f64 {
        match self.arch {
            "aarch64" | "arm64" => prices.lambda_gb_second_arm64,
            _ => prices.lambda_gb_second_x86_64,
        }
    }

    /// `cargo lambda watch` on this machine, checked against in the same way
    /// as the in-process backend: the measured task times hold their reads
    /// and writes (LocalStack's S3); an invocation adds the round trip
    /// BENCHMARKS.md measured ("Lambda invocation overhead", 1.87 ms), and a
    /// function process's first one its start (EMULATORS.md: ~85 ms).
    pub fn emulated_lambda() -> Self {
        Platform {
            name: "cargo lambda watch",
            invoke: Latency {
                median: 0.0019,
                p95: 0.0097,
            },
            cold_start: Latency {
                median: 0.085,
                p95: 0.085,
            },
            ..Platform::in_process()
        }
    }

    /// The in-process backend on this machine: the times measured already
    /// hold its reads and writes.
    pub fn in_process() -> Self {
        Platform {
            name: "in-process",
            invoke: Latency::ZERO,
            cold_start: Latency::ZERO,
            new_workers_per_10s: usize::MAX,
            functions: 1,
            request: Latency::ZERO,
            stall_probability: 0.0,
            stall_seconds: (0.0, 0.0),
            hedge_after: None,
            request_concurrency: 1.0,
            bandwidth: None,
            memory_mb: None,
            arch: "x86_64",
            cpu_factor: 1.0,
        }
    }
}
