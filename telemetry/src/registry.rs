//! Counters and histograms keyed by label values, and their Prometheus text.
//!
//! A family keeps its series in a map from the hash of the label values to
//! the few series sharing that hash, so recording a known series allocates
//! nothing. Each family holds at most [`MAX_SERIES`] series: past that, new
//! label sets are counted in one overflow series whose labels are all `_`,
//! so no input can grow memory without bound.

use std::{
    collections::HashMap,
    fmt::Write,
    hash::{BuildHasher, Hasher},
    sync::Mutex,
};

/// The most series one family keeps.
pub const MAX_SERIES: usize = 2_000;

/// Dapr's latency buckets, in milliseconds.
pub const LATENCY_MS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 40.0, 50.0, 65.0, 80.0, 100.0,
    130.0, 160.0, 200.0, 250.0, 300.0, 400.0, 500.0, 650.0, 800.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
    50000.0, 100000.0,
];

/// Dapr's size buckets, in bytes.
pub const SIZE_BYTES: &[f64] = &[
    1024.0,
    2048.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
];

/// What a family's series hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug)]
struct Series {
    labels: Box<[Box<str>]>,
    /// Counter or gauge value; a histogram's observation count.
    count: f64,
    sum: f64,
    /// Per bucket (not cumulative); histograms only.
    buckets: Box<[u64]>,
}

/// One metric: a name, label names and its series.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    bounds: Box<[f64]>,
    /// Counters whose value is a histogram series' observation count,
    /// rendered as families of their own: one lookup records them all.
    counts: &'static [(&'static str, &'static str)],
    /// Label rewrites: (label position, [(replacement, pattern)]).
    rules: Vec<(usize, Vec<(String, regex::Regex)>)>,
    series: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    by_hash: HashMap<u64, Vec<Series>, Fixed>,
    len: usize,
}

/// A fixed hasher: label hashes need no protection from chosen collisions
/// (a collision only costs a comparison), and must not cost a random seed.
#[derive(Clone, Copy, Debug, Default)]
struct Fixed;

impl BuildHasher for Fixed {
    type Hasher = Mix;
    fn build_hasher(&self) -> Mix {
        Mix(0xcbf2_9ce4_8422_2325)
    }
}

/// A multiply-rotate hash over eight label bytes at a time.
#[derive(Debug)]
struct Mix(u64);

impl Mix {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
}

fn hash(values: &[&str]) -> u64 {
    let mut h = Fixed.build_hasher();
    for v in values {
        h.write(v.as_bytes());
        h.write(&[0xff]);
    }
    h.finish()
}

impl Family {
    fn new(
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &'static [&'static str],
        bounds: &[f64],
    ) -> Self {
        Self {
            name,
            help,
            kind,
            labels,
            bounds: bounds.into(),
            counts: &[],
            rules: Vec::new(),
            series: Mutex::new(Table::default()),
        }
    }

    /// A counter.
    pub fn counter(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self::new(name, help, Kind::Counter, labels, &[])
    }

    /// A gauge.
    pub fn gauge(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self::new(name, help, Kind::Gauge, labels, &[])
    }

    /// A histogram with these upper bounds.
    pub fn histogram(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &[f64],
    ) -> Self {
        Self::new(name, help, Kind::Histogram, labels, bounds)
    }

    /// Also renders counters (name, help) equal to each series' number of
    /// observations, e.g. a request count beside a latency histogram.
    pub fn with_counts(mut self, counts: &'static [(&'static str, &'static str)]) -> Self {
        self.counts = counts;
        self
    }

    /// Rewrites label values: a value of `label` that a pattern matches
    /// (anywhere in it) is recorded as that pattern's replacement. Returns
    /// false when the family has no such label.
    pub fn rewrite(&mut self, label: &str, rewrites: Vec<(String, regex::Regex)>) -> bool {
        match self.labels.iter().position(|l| *l == label) {
            Some(i) => {
                self.rules.push((i, rewrites));
                true
            }
            None => false,
        }
    }

    /// The names this family renders: its own and its counts'.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.name).chain(self.counts.iter().map(|(n, _)| *n))
    }

    fn with(&self, values: &[&str], f: impl FnOnce(&mut Series)) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        if !self.rules.is_empty() {
            let mut rewritten: Vec<&str> = values.to_vec();
            for (i, rewrites) in &self.rules {
                if let Some(v) = rewritten.get_mut(*i)
                    && let Some((to, _)) = rewrites.iter().find(|(_, re)| re.is_match(v))
                {
                    *v = to;
                }
            }
            return self.record(&rewritten, f);
        }
        self.record(values, f);
    }

    fn record(&self, values: &[&str], f: impl FnOnce(&mut Series)) {
        let Ok(mut table) = self.series.lock() else {
            return;
        };
        let overflow;
        let mut values = values;
        if table.len >= MAX_SERIES && !table.contains(values) {
            overflow = vec!["_"; values.len()];
            values = &overflow;
        }
        let h = hash(values);
        let table = &mut *table;
        let bucket = table.by_hash.entry(h).or_default();
        let i = match bucket
            .iter()
            .position(|s| s.labels.iter().map(|l| &**l).eq(values.iter().copied()))
        {
            Some(i) => i,
            None => {
                bucket.push(Series {
                    labels: values.iter().map(|v| Box::from(*v)).collect(),
                    count: 0.0,
                    sum: 0.0,
                    buckets: vec![0; self.bounds.len()].into(),
                });
                table.len += 1;
                bucket.len() - 1
            }
        };
        f(&mut bucket[i]);
    }

    /// Adds `n` to a counter (or gauge).
    pub fn add(&self, values: &[&str], n: f64) {
        self.with(values, |s| s.count += n);
    }

    /// Sets a gauge.
    pub fn set(&self, values: &[&str], v: f64) {
        self.with(values, |s| s.count = v);
    }

    /// Records one observation in a histogram.
    pub fn observe(&self, values: &[&str], v: f64) {
        let slot = self.bounds.partition_point(|b| *b < v);
        self.with(values, |s| {
            s.count += 1.0;
            s.sum += v;
            if let Some(b) = s.buckets.get_mut(slot) {
                *b += 1;
            }
        });
    }

    /// How many series the family holds.
    pub fn len(&self) -> usize {
        self.series.lock().map(|t| t.len).unwrap_or(0)
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the family in Prometheus text format (nothing when it has no series).
    pub fn render(&self, out: &mut String) {
        let Ok(table) = self.series.lock() else {
            return;
        };
        if table.len == 0 {
            return;
        }
        let kind = match self.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
        let mut all: Vec<&Series> = table.by_hash.values().flatten().collect();
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        for (name, help) in self.counts {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for s in &all {
                let labels = self.label_text(&s.labels);
                let _ = writeln!(out, "{name}{} {}", braced(&labels), number(s.count));
            }
        }
        for s in all {
            let labels = self.label_text(&s.labels);
            match self.kind {
                Kind::Counter | Kind::Gauge => {
                    let _ = writeln!(out, "{}{} {}", self.name, braced(&labels), number(s.count));
                }
                Kind::Histogram => {
                    let sep = if labels.is_empty() { "" } else { "," };
                    let mut cumulative = 0u64;
                    for (bound, n) in self.bounds.iter().zip(s.buckets.iter()) {
                        cumulative += n;
                        let _ = writeln!(
                            out,
                            "{}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}",
                            self.name,
                            number(*bound)
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
                        self.name,
                        number(s.count)
                    );
                    let _ = writeln!(out, "{}_sum{} {}", self.name, braced(&labels), number(s.sum));
                    let _ = writeln!(out, "{}_count{} {}", self.name, braced(&labels), number(s.count));
                }
            }
        }
    }

    fn label_text(&self, values: &[Box<str>]) -> String {
        let mut s = String::new();
        for (i, (k, v)) in self.labels.iter().zip(values.iter()).enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(k);
            s.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => s.push_str("\\\\"),
                    '"' => s.push_str("\\\""),
                    '\n' => s.push_str("\\n"),
                    c => s.push(c),
                }
            }
            s.push('"');
        }
        s
    }
}

impl Table {
    fn contains(&self, values: &[&str]) -> bool {
        self.by_hash.get(&hash(values)).is_some_and(|b| {
            b.iter()
                .any(|s| s.labels.iter().map(|l| &**l).eq(values.iter().copied()))
        })
    }
}

/// Labels in braces; nothing for a family without labels.
fn braced(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

/// A number as Prometheus writes it: integers without a fraction.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_as_prometheus_text() {
        let c = Family::counter("dapr_x_total", "Things.", &["app_id", "path"]);
        c.add(&["a", "/v1.0/\"odd\""], 1.0);
        c.add(&["a", "/v1.0/\"odd\""], 2.0);
        let mut out = String::new();
        c.render(&mut out);
        assert_eq!(
            out,
            "# HELP dapr_x_total Things.\n# TYPE dapr_x_total counter\ndapr_x_total{app_id=\"a\",path=\"/v1.0/\\\"odd\\\"\"} 3\n"
        );
        let h = Family::histogram("dapr_lat", "Latency.", &["app_id"], &[1.0, 5.0]);
        h.observe(&["a"], 0.5);
        h.observe(&["a"], 3.0);
        h.observe(&["a"], 9.0);
        let mut out = String::new();
        h.render(&mut out);
        assert!(
            out.contains("dapr_lat_bucket{app_id=\"a\",le=\"1\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("dapr_lat_bucket{app_id=\"a\",le=\"5\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("dapr_lat_bucket{app_id=\"a\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("dapr_lat_sum{app_id=\"a\"} 12.5\n"), "{out}");
        assert!(out.contains("dapr_lat_count{app_id=\"a\"} 3\n"), "{out}");
    }

    #[test]
    fn counts_beside_a_histogram_come_from_one_lookup() {
        let h = Family::histogram("dapr_l", "L.", &["m"], &[1.0]).with_counts(&[
            ("dapr_l_requests", "Requests."),
            ("dapr_l_responses", "Responses."),
        ]);
        h.observe(&["GET"], 0.5);
        h.observe(&["GET"], 2.0);
        let mut out = String::new();
        h.render(&mut out);
        assert!(
            out.contains("# TYPE dapr_l_requests counter\ndapr_l_requests{m=\"GET\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("dapr_l_responses{m=\"GET\"} 2\n"), "{out}");
        assert!(out.contains("dapr_l_count{m=\"GET\"} 2\n"), "{out}");
    }

    #[test]
    fn rules_rewrite_matching_label_values() {
        let mut c = Family::counter("dapr_calls", "Calls.", &["app_id", "method"]);
        let re = regex::Regex::new("orders/.+").expect("regex");
        assert!(c.rewrite("method", vec![("orders/".into(), re)]));
        assert!(!c.rewrite("nope", vec![]));
        c.add(&["a", "orders/123"], 1.0);
        c.add(&["a", "orders/456"], 1.0);
        c.add(&["a", "users/1"], 1.0);
        let mut out = String::new();
        c.render(&mut out);
        assert!(
            out.contains("dapr_calls{app_id=\"a\",method=\"orders/\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("dapr_calls{app_id=\"a\",method=\"users/1\"} 1\n"),
            "{out}"
        );
    }

    #[test]
    fn a_family_without_labels_has_no_braces() {
        let c = Family::counter("dapr_z_total", "Z.", &[]);
        c.add(&[], 2.0);
        let mut out = String::new();
        c.render(&mut out);
        assert!(out.ends_with("\ndapr_z_total 2\n"), "{out}");
    }

    #[test]
    fn a_family_never_holds_more_than_its_cap() {
        let c = Family::counter("dapr_y", "Y.", &["path"]);
        for i in 0..(MAX_SERIES + 500) {
            c.add(&[&format!("/p/{i}")], 1.0);
        }
        assert_eq!(c.len(), MAX_SERIES + 1, "the cap plus the overflow series");
        let mut out = String::new();
        c.render(&mut out);
        assert!(out.contains("dapr_y{path=\"_\"} 500\n"));
        // A series that exists goes on counting.
        c.add(&["/p/1"], 1.0);
        let mut out = String::new();
        c.render(&mut out);
        assert!(out.contains("dapr_y{path=\"/p/1\"} 2\n"));
    }
}
