//! `tshm`: look at and clean up the typed-shm segments of this user in
//! `/dev/shm` — list them, show and watch their values decoded field by
//! field from the layout each segment stores, remove them safely, collect
//! the stale ones, and print C or Python definitions of their layout.
//!
//! Exit status: 0 on success, 1 when an action is refused or fails (with a
//! message on standard error), 2 on bad usage.

mod generate;
mod value;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use comfy_table::{Table, presets};
use serde_json::json;
use typed_shm::inspect::{self, Removal, Segment, Summary};

/// Inspect and clean up typed-shm shared-memory segments.
#[derive(Parser)]
#[command(name = "tshm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every typed-shm segment of this user in /dev/shm.
    List {
        /// One JSON array on standard output.
        #[arg(long)]
        json: bool,
    },
    /// The current value, decoded field by field (a consistent copy, taken
    /// without the lock).
    Show {
        /// The segment's key.
        key: String,
        /// One JSON object: {"key", "version", "poisoned", "value"}.
        #[arg(long)]
        json: bool,
    },
    /// Prints the value at every commit, N times or until interrupted.
    Watch {
        /// The segment's key.
        key: String,
        /// One JSON object per line, shaped as `show --json`'s.
        #[arg(long)]
        json: bool,
        /// Stop after this many commits.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Removes a segment; refuses while processes are attached.
    Rm {
        /// The segment's key.
        key: String,
        /// Remove the name even while processes are attached (they keep
        /// working on the unnamed segment).
        #[arg(long)]
        force: bool,
    },
    /// Removes this user's stale segments (no live attachment).
    Gc {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Prints a C struct or a Python ctypes.Structure with the stored layout.
    Header {
        /// The segment's key.
        key: String,
        /// The language.
        #[arg(long, value_enum)]
        lang: Lang,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Lang {
    C,
    Python,
}

/// A refused or failed action: its message goes to standard error, exit 1.
struct Failure(String);

impl From<typed_shm::Error> for Failure {
    fn from(e: typed_shm::Error) -> Self {
        Failure(e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure(format!("cannot write the output: {e}"))
    }
}

fn main() -> ExitCode {
    // clap exits with 2 on bad usage (and 0 for --help and --version).
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            eprintln!("tshm: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::List { json } => {
            let all = inspect::list()?;
            if json {
                let rows: Vec<_> = all.iter().map(summary_json).collect();
                writeln!(out, "{}", serde_json::Value::Array(rows))?;
            } else {
                writeln!(out, "{}", summary_table(&all))?;
            }
        }
        Command::Show { key, json } => {
            let seg = Segment::open(&key)?;
            let copy = seg.snapshot()?;
            print_value(&mut out, &seg, &copy, json)?;
        }
        Command::Watch { key, json, count } => watch(&mut out, &key, json, count)?,
        Command::Rm { key, force } => match inspect::remove(&key, force)? {
            Removal::Removed { attached: 0 } => writeln!(out, "removed {key}")?,
            Removal::Removed { attached } => writeln!(
                out,
                "removed {key} (forced: {attached} attachment(s) keep the unnamed segment)"
            )?,
            Removal::InUse { attached } => {
                return Err(Failure(format!(
                    "segment {key:?} is in use ({attached} live attachment(s)); not removed (--force removes it anyway)"
                )));
            }
        },
        Command::Gc { dry_run } => {
            for s in inspect::list()?.into_iter().filter(|s| s.stale) {
                if dry_run {
                    writeln!(out, "would remove {}", s.key)?;
                    continue;
                }
                // `remove` checks again, under the exclusive lock: a process
                // that attached since the listing keeps its segment.
                match inspect::remove(&s.key, false) {
                    Ok(Removal::Removed { .. }) => writeln!(out, "removed {}", s.key)?,
                    Ok(Removal::InUse { .. }) => {}
                    Err(e) if e.kind() == typed_shm::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Command::Header { key, lang } => {
            let seg = Segment::open(&key)?;
            let text = match lang {
                Lang::C => generate::c(&seg),
                Lang::Python => generate::python(&seg),
            }
            .map_err(Failure)?;
            write!(out, "{text}")?;
        }
    }
    Ok(())
}

fn summary_json(s: &Summary) -> serde_json::Value {
    json!({
        "key": s.key,
        "native_key": s.native_key,
        "type": s.description,
        "size": s.size,
        "len": s.len,
        "attached": s.attached,
        "lock": s.lock.as_str(),
        "version": s.version,
        "transactional": s.transactional,
        "stale": s.stale,
    })
}

fn summary_table(all: &[Summary]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header([
        "KEY", "TYPE", "SIZE", "LEN", "ATTACHED", "LOCK", "VERSION", "FLAGS",
    ]);
    for s in all {
        let mut flags = Vec::new();
        if s.stale {
            flags.push("stale");
        }
        if s.transactional {
            flags.push("transactional");
        }
        table.add_row([
            s.key.clone(),
            s.description.clone(),
            s.size.to_string(),
            s.len.to_string(),
            s.attached.to_string(),
            s.lock.as_str().to_owned(),
            s.version.to_string(),
            flags.join(","),
        ]);
    }
    table
}

fn print_value(
    out: &mut impl std::io::Write,
    seg: &Segment,
    copy: &inspect::Snapshot,
    json: bool,
) -> Result<(), Failure> {
    let value = value::decode(seg, &copy.bytes);
    if json {
        let doc = json!({
            "key": seg.key(),
            "version": copy.version,
            "poisoned": copy.poisoned,
            "value": value,
        });
        writeln!(out, "{doc}")?;
    } else {
        let poisoned = if copy.poisoned { ", POISONED" } else { "" };
        writeln!(out, "{} (version {}{poisoned})", seg.key(), copy.version)?;
        let mut lines = Vec::new();
        value::flatten("", &value, &mut lines);
        for (path, v) in lines {
            writeln!(out, "  {path} = {v}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// How often `watch` looks whether its segment was removed meanwhile.
const WATCH_SLICE: Duration = Duration::from_millis(250);

fn watch(out: &mut impl std::io::Write, key: &str, json: bool, count: Option<u64>) -> Result<(), Failure> {
    let seg = Segment::open(key)?;
    let mut seen = seg.version();
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        match seg.wait_for_change(seen, Some(WATCH_SLICE)) {
            Ok(now) if now != seen => {
                seen = now;
                let copy = seg.snapshot()?;
                print_value(out, &seg, &copy, json)?;
                printed += 1;
            }
            // Poisoned without a commit: woken at once, nothing new to show.
            Ok(_) => std::thread::sleep(WATCH_SLICE),
            Err(e) if e.kind() == typed_shm::ErrorKind::TimedOut => {}
            Err(e) => return Err(e.into()),
        }
        // Its last user detached, or it was removed: no commit will come.
        if seg.state() != inspect::State::Ready {
            return Err(Failure(format!("segment {key:?} was removed")));
        }
    }
    Ok(())
}
