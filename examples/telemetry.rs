//! A producer commits telemetry at a fixed rate; a consumer in another
//! process waits for each change (no polling) and prints it, reading with
//! `snapshot` (no lock: it never holds up the producer).
//!
//! ```text
//! cargo run --example telemetry                          # both, as two processes
//! cargo run --example telemetry -- producer KEY 50 100   # 100 samples at 50 Hz
//! cargo run --example telemetry -- consumer KEY 100      # print 100 changes
//! ```

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use typed_shm::{ErrorKind, ReadOnly, SharedMemory, ShmSafe};

/// One sample, as the processes share it.
#[derive(Clone, Copy, Debug, ShmSafe)]
#[repr(C)]
struct Telemetry {
    /// Sample number, from 1.
    seq: u64,
    /// Microseconds since the producer started.
    micros: u64,
    /// Eight temperatures, in °C.
    temps: [f32; 8],
}

fn producer(key: &str, hz: u64, count: u64) -> Result<(), typed_shm::Error> {
    let empty = Telemetry {
        seq: 0,
        micros: 0,
        temps: [0.0; 8],
    };
    let shm = SharedMemory::<Telemetry>::open_or_create(key, || empty)?;
    let start = Instant::now();
    let period = Duration::from_micros(1_000_000 / hz.max(1));
    for n in 1..=count {
        {
            let mut t = shm.lock().unwrap_or_else(|p| p.into_inner());
            t.seq = n;
            t.micros = start.elapsed().as_micros() as u64;
            for (i, temp) in t.temps.iter_mut().enumerate() {
                *temp = 20.0 + i as f32 + (n % 10) as f32 / 10.0;
            }
        } // the guard's drop commits and wakes the consumer
        std::thread::sleep((start + period * n as u32).saturating_duration_since(Instant::now()));
    }
    // Give the consumer a moment to read the last sample before the segment
    // can go away with the last handle.
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

/// Attaches read-only, waiting up to 10 s for the producer to create the
/// segment.
fn attach_when_ready(key: &str) -> Result<SharedMemory<Telemetry, ReadOnly>, typed_shm::Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SharedMemory::<Telemetry, ReadOnly>::attach(key) {
            Err(e) if e.kind() == ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn consumer(key: &str, count: u64) -> Result<u64, typed_shm::Error> {
    let shm = attach_when_ready(key)?;
    let mut seen = shm.version();
    let mut last = 0;
    while last < count {
        // Woken by the producer's commit; a producer that stops for 2 s ends
        // the wait with TimedOut.
        seen = shm.wait_for_change_timeout(seen, Duration::from_secs(2))?;
        let t = shm.snapshot().unwrap_or_else(|p| {
            eprintln!("the producer died while writing; the data as it stands:");
            p.into_inner()
        });
        if t.seq != last {
            println!("#{:<4} at {:>8} µs: {:?}", t.seq, t.micros, t.temps);
            last = t.seq;
        }
    }
    Ok(last)
}

fn run(exe: &std::path::Path, args: &[&str]) -> std::process::Child {
    Command::new(exe)
        .args(args)
        .stdout(Stdio::inherit())
        .spawn()
        .expect("start a process of this example")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let result = match arg(1, "demo").as_str() {
        "producer" => producer(
            &arg(2, "telemetry"),
            arg(3, "50").parse().expect("rate in Hz"),
            arg(4, "100").parse().expect("count"),
        ),
        "consumer" => consumer(&arg(2, "telemetry"), arg(3, "100").parse().expect("count")).map(|last| {
            println!("consumer: last sample {last}");
        }),
        "demo" => {
            let key = format!("telemetry-example-{}", std::process::id());
            let exe = std::env::current_exe().expect("this example's path");
            let mut consumer = run(&exe, &["consumer", &key, "50"]);
            let mut producer = run(&exe, &["producer", &key, "100", "50"]);
            let ok = producer.wait().is_ok_and(|s| s.success()) & consumer.wait().is_ok_and(|s| s.success());
            let gone = !std::path::Path::new(&format!("/dev/shm/tshm_{key}")).exists();
            println!("demo: both processes succeeded: {ok}; segment removed: {gone}");
            return if ok && gone {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        other => {
            eprintln!("usage: telemetry [demo | producer KEY HZ COUNT | consumer KEY COUNT], not {other:?}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("telemetry: {e}");
            ExitCode::FAILURE
        }
    }
}
