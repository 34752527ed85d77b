//! Reading Prometheus text exposition (the apps' `/metrics`).

/// Sum of the samples of metric `name` whose labels include every `labels` pair.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The user-cache counters of one app's `/metrics`: (lookups answered by L1 or L2, loads of a
/// user from the database).
pub fn user_cache(text: &str) -> (f64, f64) {
    let hits = sum(
        text,
        "app_cache_lookups_total",
        &[("level", "l1"), ("result", "hit")],
    ) + sum(
        text,
        "app_cache_lookups_total",
        &[("level", "l2"), ("result", "hit")],
    );
    (
        hits,
        sum(text, "app_cache_db_loads_total", &[("entity", "user")]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_matching_series_only() {
        let text = "# HELP x\n\
                    app_cache_lookups_total{level=\"l1\",result=\"hit\"} 3\n\
                    app_cache_lookups_total{level=\"l2\",result=\"hit\"} 2\n\
                    app_cache_lookups_total{level=\"l1\",result=\"miss\"} 7\n\
                    app_cache_db_loads_total{entity=\"user\"} 1\n";
        assert_eq!(
            sum(text, "app_cache_lookups_total", &[("result", "hit")]),
            5.0
        );
        assert_eq!(user_cache(text), (5.0, 1.0));
        assert_eq!(sum(text, "nope", &[]), 0.0);
    }
}
