//! Prometheus' classic text format (version 0.0.4), derived from the OpenMetrics text that
//! `prometheus-client` writes. Scrapers that do not ask for OpenMetrics (and tools such as
//! `promtool check metrics`) get this form.
//!
//! The differences handled: counter families are named with their `_total` suffix, `info`
//! families become gauges named `<name>_info`, `stateset` becomes a gauge and `unknown` becomes
//! `untyped`, and `# UNIT`, `# EOF`, `_created` samples and exemplars are dropped.

/// The content type of this format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Converts an OpenMetrics text exposition to the classic Prometheus text format.
pub fn from_openmetrics(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending_help: Option<(&str, &str)> = None;
    let mut counters: Vec<String> = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            pending_help = rest.split_once(' ').or(Some((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = classic_family(name, kind);
            if kind == "counter" {
                counters.push(name.clone());
            }
            if let Some((_, help)) = pending_help.take() {
                out.push_str(&format!("# HELP {name} {help}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let sample = line.split(" # ").next().unwrap_or(line);
        let metric = sample.split(['{', ' ']).next().unwrap_or(sample);
        if metric.ends_with("_created")
            && counters
                .iter()
                .any(|c| metric == c.replace("_total", "_created"))
        {
            continue;
        }
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// The classic name and type of an OpenMetrics family.
fn classic_family(name: &str, kind: &str) -> (String, &'static str) {
    match kind {
        "counter" => (format!("{name}_total"), "counter"),
        "info" => (format!("{name}_info"), "gauge"),
        "gauge" | "stateset" => (name.to_string(), "gauge"),
        "histogram" | "gaugehistogram" => (name.to_string(), "histogram"),
        "summary" => (name.to_string(), "summary"),
        _ => (name.to_string(), "untyped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_infos_units_and_eof_are_translated() {
        let openmetrics = "# HELP shoal_agent Facts.\n# TYPE shoal_agent info\nshoal_agent_info{v=\"1\"} 1\n\
            # HELP shoal_x_seconds Time.\n# TYPE shoal_x_seconds counter\n# UNIT shoal_x_seconds seconds\n\
            shoal_x_seconds_total 3 # {trace=\"a\"} 1.0\nshoal_x_seconds_created 17\n# EOF\n";
        let text = from_openmetrics(openmetrics);
        assert_eq!(
            text,
            "# HELP shoal_agent_info Facts.\n# TYPE shoal_agent_info gauge\nshoal_agent_info{v=\"1\"} 1\n\
             # HELP shoal_x_seconds_total Time.\n# TYPE shoal_x_seconds_total counter\nshoal_x_seconds_total 3\n"
        );
    }

    #[test]
    fn gauges_and_histograms_pass_through() {
        let openmetrics = "# HELP g A gauge.\n# TYPE g gauge\ng{a=\"b\"} 2\n# HELP h H.\n# TYPE h histogram\n\
            h_sum 1.0\nh_count 1\nh_bucket{le=\"+Inf\"} 1\n# EOF\n";
        let text = from_openmetrics(openmetrics);
        assert!(text.contains("# TYPE g gauge\ng{a=\"b\"} 2\n"), "{text}");
        assert!(
            text.contains("# TYPE h histogram\nh_sum 1.0\nh_count 1\nh_bucket{le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("EOF"));
    }
}
