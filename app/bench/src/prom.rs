//! Reading the Prometheus text format the app serves on `/metrics`.

/// One sample: name, labels (in the order written) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample of an exposition (comments and malformed lines skipped).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.trim().parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, Vec::new()),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, v) = rest.split_once("=\"")?;
        let end = v.find('"')?;
        out.push((k.trim_start_matches(',').to_string(), v[..end].to_string()));
        rest = v[end + 1..].trim_start_matches(',');
    }
    Some(out)
}

/// The samples of one exposition, queried by name and labels.
pub struct Metrics(pub Vec<Sample>);

impl Metrics {
    pub fn parse(text: &str) -> Self {
        Self(parse(text))
    }

    /// The sum of the samples named `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// A histogram's cumulative buckets `(le, count)`, in increasing `le` (+Inf last).
    pub fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut b: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter(|s| s.name == bucket)
            .filter_map(|s| {
                let le = &s.labels.iter().find(|(k, _)| k == "le")?.1;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, s.value))
            })
            .collect();
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        b
    }
}

/// What a histogram recorded between two scrapes: count, mean and the upper bound of the
/// bucket holding the `p`-th percentile (buckets only bound a percentile from above).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct HistogramDelta {
    pub count: f64,
    pub mean: f64,
    pub p99_upper_bound: f64,
}

pub fn histogram_delta(before: &Metrics, after: &Metrics, name: &str) -> HistogramDelta {
    let count =
        after.sum(&format!("{name}_count"), &[]) - before.sum(&format!("{name}_count"), &[]);
    let sum = after.sum(&format!("{name}_sum"), &[]) - before.sum(&format!("{name}_sum"), &[]);
    let (b0, b1) = (before.buckets(name), after.buckets(name));
    let mut p99 = 0.0;
    if count > 0.0 {
        for (i, (le, c)) in b1.iter().enumerate() {
            let prev = b0.get(i).map(|x| x.1).unwrap_or(0.0);
            if c - prev >= 0.99 * count {
                p99 = *le;
                break;
            }
        }
    }
    HistogramDelta {
        count,
        mean: if count > 0.0 { sum / count } else { 0.0 },
        p99_upper_bound: p99,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x y\n\
        app_cache_lookups_total{level=\"l1\",result=\"hit\"} 7\n\
        app_cache_lookups_total{level=\"l2\",result=\"hit\"} 3\n\
        app_db_pool_connections_in_use 2\n\
        w_bucket{le=\"0.001\"} 5\n\
        w_bucket{le=\"0.01\"} 99\n\
        w_bucket{le=\"+Inf\"} 100\n\
        w_sum 0.5\n\
        w_count 100\n";

    #[test]
    fn reads_samples_and_histograms() {
        let m = Metrics::parse(TEXT);
        assert_eq!(m.sum("app_cache_lookups_total", &[("result", "hit")]), 10.0);
        assert_eq!(
            m.sum(
                "app_cache_lookups_total",
                &[("level", "l2"), ("result", "hit")]
            ),
            3.0
        );
        assert_eq!(m.sum("app_db_pool_connections_in_use", &[]), 2.0);
        let empty = Metrics(Vec::new());
        let d = histogram_delta(&empty, &m, "w");
        assert_eq!((d.count, d.mean, d.p99_upper_bound), (100.0, 0.005, 0.01));
    }
}
