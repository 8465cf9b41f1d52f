//! The bench clock, latency summaries, and the tables it prints.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Starts the bench clock; call once, early.
pub fn start_clock() {
    EPOCH.get_or_init(Instant::now);
}

/// Nanoseconds since the bench started. Producer and consumers share this
/// clock (same process), so `received - sent` is a true one-way latency.
pub fn now_ns() -> u64 {
    ns_at(Instant::now())
}

/// The bench-clock value of an `Instant` (e.g. one taken by an in-process
/// fake server); 0 before the clock started.
pub fn ns_at(t: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// The `Instant` a bench-clock value stands for.
pub fn instant_at(ns: u64) -> Instant {
    *EPOCH.get_or_init(Instant::now) + Duration::from_nanos(ns)
}

/// p50, p99 and max of a set of latencies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// Samples.
    pub n: usize,
    /// Median, ns.
    pub p50: u64,
    /// 99th percentile, ns.
    pub p99: u64,
    /// Largest, ns.
    pub max: u64,
}

impl Latency {
    /// Summarizes `samples` (sorted in place).
    pub fn of(samples: &mut [u64]) -> Self {
        samples.sort_unstable();
        Self {
            n: samples.len(),
            p50: percentile(samples, 50.0),
            p99: percentile(samples, 99.0),
            max: samples.last().copied().unwrap_or(0),
        }
    }
}

/// Nearest-rank percentile of sorted samples; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with two decimals (or "-" when there were no samples).
pub fn ms(ns: u64, n: usize) -> String {
    if n == 0 {
        "-".into()
    } else {
        format!("{:.2}", ns as f64 / 1e6)
    }
}

/// kB to MB with one decimal.
pub fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

/// One printed table: a Markdown pipe table with a title and notes.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Printed as a `###` heading.
    pub title: String,
    /// Column names.
    pub headers: Vec<String>,
    /// Cells.
    pub rows: Vec<Vec<String>>,
    /// Lines printed under the table.
    pub notes: Vec<String>,
}

impl Table {
    /// An empty table with these columns.
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Self {
            title: title.into(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders as Markdown, columns padded so it reads in a terminal too.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(c.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).map_or("", String::as_str);
                let _ = write!(s, " {c:<w$} |");
            }
            s.push('\n');
            s
        };
        let mut out = format!("### {}\n\n", self.title);
        out.push_str(&line(&self.headers));
        let mut sep = String::from("|");
        for w in &widths {
            let _ = write!(sep, "{}|", "-".repeat(w + 2));
        }
        out.push_str(&sep);
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "{n}");
            }
        }
        out
    }
}

/// A target from the issue and where this run stands.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was aimed for.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met, missed, or not judged.
    pub met: Option<bool>,
}

/// The summary table of every target checked in this run.
pub fn checks_table(checks: &[Check]) -> Table {
    let mut t = Table::new("Targets", &["target", "measured", "met"]);
    for c in checks {
        t.row(vec![
            c.target.clone(),
            c.measured.clone(),
            match c.met {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "-".into(),
            },
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<u64> = (1..=100).collect();
        let l = Latency::of(&mut v);
        assert_eq!((l.p50, l.p99, l.max), (50, 99, 100));
        assert_eq!(percentile(&[], 99.0), 0);
        assert_eq!(percentile(&[7], 99.0), 7);
    }
}
