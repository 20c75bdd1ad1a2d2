//! Turning a [`RunStats`] into output (JSON, a summary table, an HdrHistogram percentile
//! distribution, an SVG plot), and reading the JSON back.
//!
//! The JSON document is the durable form of a run: it carries the raw counters, the per-second
//! timeline and the full latency histogram (HdrHistogram's standard V2 + DEFLATE encoding in
//! base64, values in **nanoseconds**), so runs written by several loadgen processes or hosts
//! can be read back with [`from_json`] and added with [`merge`] exactly, as if one process had
//! measured everything. The summary keys of the document (`throughput_msgs_per_s`,
//! `latency_us`) are there for people and scripts; [`from_json`] ignores them and
//! recomputes them from the histogram.
//!
//! The text and SVG outputs are for people: [`summary_table`] for the terminal, [`hgrm`] for
//! the HdrHistogram plotter and other tools that read `outputPercentileDistribution` text, and
//! [`svg_plot`] / [`svg_plot_many`] for a self-contained picture (hand-written SVG, no
//! plotting library, no fonts or scripts embedded).
//!
//! This module does no I/O and measures nothing: callers decide where the bytes go.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use simd_json::OwnedValue;
use simd_json::owned::Object;
use simd_json::prelude::{ValueAsArray, ValueAsObject, ValueAsScalar, Writable as _};

use crate::stats::{
    ACK_CODES, ErrorKind, LATENCY_MAX_NS, LATENCY_SIGFIGS, RunStats, new_latency_histogram,
};

/// The `format_version` this module writes and the only one it reads.
pub const FORMAT_VERSION: u64 = 1;

/// Why a JSON report could not be read back. Every message names the offending key (dotted
/// for nested keys, e.g. `ack_codes.AA`) or the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The bytes are not JSON at all.
    #[error("report is not valid JSON: {0}")]
    Json(#[from] simd_json::Error),
    /// A required key is absent.
    #[error("report is missing the key `{0}`")]
    MissingKey(String),
    /// A key is present but holds the wrong kind of value.
    #[error("report key `{key}` must be {expected}")]
    WrongType {
        /// The key, dotted if nested; `(document)` for the top level.
        key: String,
        /// What was expected, in words.
        expected: &'static str,
    },
    /// `format_version` is not one this build understands.
    #[error("report `format_version` is {0}; this build reads only version {FORMAT_VERSION}")]
    UnsupportedVersion(u64),
    /// `histogram_unit` is not `ns`, so the histogram's numbers would be misread.
    #[error("report `histogram_unit` is {0:?}; only \"ns\" is supported")]
    HistogramUnit(String),
    /// `histogram` is not valid base64.
    #[error("report key `histogram` is not valid base64: {0}")]
    Base64(String),
    /// `histogram` decodes to bytes that are not an HdrHistogram V2 serialization.
    #[error("report key `histogram` is not a valid HdrHistogram V2 encoding: {0}")]
    Histogram(#[source] hdrhistogram::serialization::DeserializeError),
    /// The histogram holds latencies beyond what this project records (one hour).
    #[error(
        "report key `histogram` holds values beyond {LATENCY_MAX_NS} ns, the recordable maximum"
    )]
    HistogramRange,
}

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

/// Writes a run as a pretty-printed JSON document (`format_version` 1).
///
/// Keys: `format_version`, `sent`, `acked`, `ack_codes` (MSA-1 → count), `errors` (kind →
/// count), `reconnects`, `warmup_sent` and `warmup_acked` (messages written and ACKs matched
/// during the warm-up, not in `sent` and `acked`), `process_cpu_s` (user + system CPU seconds
/// of the generating process over its whole life; 0 if not measured), `duration_s`,
/// `throughput_msgs_per_s`, `latency_us` (`p50`, `p90`,
/// `p99`, `p999`, `p9999`, `max`, `mean` in µs and `count`), `histogram_unit` (`"ns"`),
/// `histogram` (base64 of the HdrHistogram V2 + DEFLATE serialization of the latency
/// histogram, values in nanoseconds: the encoding HdrHistogram interval logs use, so the
/// HdrHistogram tools of any language can decode it), `timeline_acked_per_s` (ACKs matched in
/// each second) and `meta` (string → string).
pub fn to_json(stats: &RunStats) -> Vec<u8> {
    let mut latency = Object::default();
    for (key, q) in [
        ("p50", 0.5),
        ("p90", 0.9),
        ("p99", 0.99),
        ("p999", 0.999),
        ("p9999", 0.9999),
    ] {
        latency.insert(key.to_owned(), finite(stats.latency_us(q)).into());
    }
    latency.insert("max".to_owned(), finite(stats.latency_max_us()).into());
    latency.insert(
        "mean".to_owned(),
        finite(stats.latency.mean() / 1_000.0).into(),
    );
    latency.insert("count".to_owned(), stats.latency.len().into());

    let mut doc = Object::default();
    doc.insert("format_version".to_owned(), FORMAT_VERSION.into());
    doc.insert("sent".to_owned(), stats.sent.into());
    doc.insert("acked".to_owned(), stats.acked.into());
    doc.insert("ack_codes".to_owned(), counts_value(&stats.ack_codes));
    doc.insert("errors".to_owned(), counts_value(&stats.errors));
    doc.insert("reconnects".to_owned(), stats.reconnects.into());
    doc.insert("warmup_sent".to_owned(), stats.warmup_sent.into());
    doc.insert("warmup_acked".to_owned(), stats.warmup_acked.into());
    doc.insert(
        "process_cpu_s".to_owned(),
        finite(stats.process_cpu_s).into(),
    );
    doc.insert("duration_s".to_owned(), finite(stats.duration_s).into());
    doc.insert(
        "throughput_msgs_per_s".to_owned(),
        finite(stats.throughput_msgs_per_s()).into(),
    );
    doc.insert("latency_us".to_owned(), OwnedValue::from(latency));
    doc.insert("histogram_unit".to_owned(), "ns".into());
    doc.insert(
        "histogram".to_owned(),
        base64_encode(&serialize_histogram(&stats.latency)).into(),
    );
    doc.insert(
        "timeline_acked_per_s".to_owned(),
        OwnedValue::from(stats.timeline.clone()),
    );
    let meta: Object = stats
        .meta
        .iter()
        .map(|(k, v)| (k.clone(), OwnedValue::from(v.as_str())))
        .collect();
    doc.insert("meta".to_owned(), OwnedValue::from(meta));

    let mut bytes = OwnedValue::from(doc).encode_pp().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// Reads a document written by [`to_json`] (simd-json parses in place, so the buffer is
/// scribbled on).
///
/// The run is rebuilt from the raw keys (`sent`, `acked`, `ack_codes`, `errors`,
/// `reconnects`, `duration_s`, `histogram`, `timeline_acked_per_s`, `meta`, and the optional
/// `warmup_sent`, `warmup_acked` and `process_cpu_s`, read as 0 when absent, as in documents
/// written before they existed); the summary keys are derived data and are not trusted. `format_version` must be 1 and `histogram_unit`
/// `"ns"`. A histogram encoded with other bounds than this project's (1 ns to one hour, 3
/// significant digits), e.g. by another HdrHistogram tool, is re-recorded into those bounds
/// so that every restored run can be merged with every other.
pub fn from_json(bytes: &mut [u8]) -> Result<RunStats, ReportError> {
    let doc = simd_json::to_owned_value(bytes)?;
    let doc = doc.as_object().ok_or_else(|| ReportError::WrongType {
        key: "(document)".to_owned(),
        expected: "a JSON object",
    })?;

    let version = get_u64(doc, "format_version")?;
    if version != FORMAT_VERSION {
        return Err(ReportError::UnsupportedVersion(version));
    }
    let unit = get_str(doc, "histogram_unit")?;
    if unit != "ns" {
        return Err(ReportError::HistogramUnit(unit.to_owned()));
    }

    let encoded = get_str(doc, "histogram")?;
    let raw = base64_decode(encoded).map_err(ReportError::Base64)?;
    let latency = deserialize_histogram(&raw)?;

    Ok(RunStats {
        sent: get_u64(doc, "sent")?,
        acked: get_u64(doc, "acked")?,
        ack_codes: get_counts(doc, "ack_codes")?,
        errors: get_counts(doc, "errors")?,
        reconnects: get_u64(doc, "reconnects")?,
        warmup_sent: optional(doc, "warmup_sent", get_u64)?.unwrap_or(0),
        warmup_acked: optional(doc, "warmup_acked", get_u64)?.unwrap_or(0),
        process_cpu_s: optional(doc, "process_cpu_s", get_f64)?.unwrap_or(0.0),
        duration_s: get_f64(doc, "duration_s")?,
        latency,
        timeline: get_u64_array(doc, "timeline_acked_per_s")?,
        meta: get_strings(doc, "meta")?,
    })
}

/// Adds runs into one (see [`RunStats::merge`]: counts and histograms add, timelines add
/// second by second, the duration is the longest). No runs give an empty [`RunStats`].
pub fn merge(runs: &[RunStats]) -> RunStats {
    let mut all = RunStats::default();
    for run in runs {
        all.merge(run);
    }
    all
}

/// JSON cannot hold NaN or infinities (and simd-json's float writer would print garbage for
/// them), so a non-finite number, which only a caller's bug could produce, is written as 0.
fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

fn counts_value(counts: &BTreeMap<String, u64>) -> OwnedValue {
    let object: Object = counts
        .iter()
        .map(|(k, n)| (k.clone(), OwnedValue::from(*n)))
        .collect();
    OwnedValue::from(object)
}

fn serialize_histogram(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut out)
        // Writing into a Vec cannot fail; the only other error is a bucket count above
        // i64::MAX, which no run can reach.
        .expect("a latency histogram always serializes");
    out
}

fn deserialize_histogram(raw: &[u8]) -> Result<Histogram<u64>, ReportError> {
    let mut reader = raw;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut reader)
        .map_err(ReportError::Histogram)?;
    if h.low() == 1 && h.high() == LATENCY_MAX_NS && h.sigfig() == LATENCY_SIGFIGS {
        return Ok(h);
    }
    // Foreign bounds: `RunStats::merge` requires every histogram to fit the project's bounds,
    // so convert now (where it can fail with an error) rather than panic in a later merge.
    let mut ours = new_latency_histogram();
    ours.add(&h).map_err(|_| ReportError::HistogramRange)?;
    Ok(ours)
}

fn get<'a>(doc: &'a Object, key: &str) -> Result<&'a OwnedValue, ReportError> {
    doc.get(key)
        .ok_or_else(|| ReportError::MissingKey(key.to_owned()))
}

fn wrong(key: &str, expected: &'static str) -> ReportError {
    ReportError::WrongType {
        key: key.to_owned(),
        expected,
    }
}

/// `read(doc, key)` when `key` is present, `None` when it is absent (keys added after format
/// version 1 was first written).
fn optional<T>(
    doc: &Object,
    key: &str,
    read: fn(&Object, &str) -> Result<T, ReportError>,
) -> Result<Option<T>, ReportError> {
    if doc.contains_key(key) {
        read(doc, key).map(Some)
    } else {
        Ok(None)
    }
}

fn get_u64(doc: &Object, key: &str) -> Result<u64, ReportError> {
    get(doc, key)?
        .as_u64()
        .ok_or_else(|| wrong(key, "a non-negative integer"))
}

fn get_f64(doc: &Object, key: &str) -> Result<f64, ReportError> {
    // `cast_f64` also accepts integers: a hand-edited `"duration_s": 60` is fine.
    get(doc, key)?
        .cast_f64()
        .ok_or_else(|| wrong(key, "a number"))
}

fn get_str<'a>(doc: &'a Object, key: &str) -> Result<&'a str, ReportError> {
    get(doc, key)?
        .as_str()
        .ok_or_else(|| wrong(key, "a string"))
}

fn get_object<'a>(doc: &'a Object, key: &str) -> Result<&'a Object, ReportError> {
    get(doc, key)?
        .as_object()
        .ok_or_else(|| wrong(key, "an object"))
}

fn get_counts(doc: &Object, key: &str) -> Result<BTreeMap<String, u64>, ReportError> {
    get_object(doc, key)?
        .iter()
        .map(|(name, n)| match n.as_u64() {
            Some(n) => Ok((name.clone(), n)),
            None => Err(wrong(&format!("{key}.{name}"), "a non-negative integer")),
        })
        .collect()
}

fn get_strings(doc: &Object, key: &str) -> Result<BTreeMap<String, String>, ReportError> {
    get_object(doc, key)?
        .iter()
        .map(|(name, v)| match v.as_str() {
            Some(v) => Ok((name.clone(), v.to_owned())),
            None => Err(wrong(&format!("{key}.{name}"), "a string")),
        })
        .collect()
}

fn get_u64_array(doc: &Object, key: &str) -> Result<Vec<u64>, ReportError> {
    get(doc, key)?
        .as_array()
        .ok_or_else(|| wrong(key, "an array of non-negative integers"))?
        .iter()
        .map(|n| {
            n.as_u64()
                .ok_or_else(|| wrong(key, "an array of non-negative integers"))
        })
        .collect()
}

// Standard base64 (RFC 4648 §4, with padding), as HdrHistogram logs use; the same `base64`
// crate hdrhistogram itself depends on.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Summary table
// ---------------------------------------------------------------------------------------------

/// Appends formatted text to a `String`. Formatting into a `String` cannot fail, so the
/// `fmt::Result` carries nothing worth handling.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        let _ = $out.write_fmt(format_args!($($arg)*));
    }};
}

/// The run as a compact, aligned table for a terminal: counts, ACK codes (`AA AE AR CA CE CR`
/// first, then any others), errors by kind (or `none`), reconnects, duration, throughput and
/// latency percentiles in µs (one decimal under 1,000 µs, whole numbers with thousands
/// separators above). Ends with a newline.
pub fn summary_table(stats: &RunStats) -> String {
    let codes = ordered(&stats.ack_codes, &ACK_CODES);
    let error_keys = ErrorKind::ALL.map(ErrorKind::key);
    let errors = ordered(&stats.errors, &error_keys);

    let rows = [
        ("sent", group_u64(stats.sent), String::new()),
        ("acked", group_u64(stats.acked), breakdown(&codes)),
        (
            "errors",
            group_u64(stats.error_total()),
            if errors.is_empty() {
                "none".to_owned()
            } else {
                breakdown(&errors)
            },
        ),
        ("reconnects", group_u64(stats.reconnects), String::new()),
        (
            "duration",
            format!("{:.1}", finite(stats.duration_s)),
            "s".to_owned(),
        ),
        (
            "throughput",
            fmt_amount(stats.throughput_msgs_per_s()),
            "msg/s".to_owned(),
        ),
    ];
    let latency = [
        ("p50", stats.latency_us(0.5)),
        ("p90", stats.latency_us(0.9)),
        ("p99", stats.latency_us(0.99)),
        ("p99.9", stats.latency_us(0.999)),
        ("p99.99", stats.latency_us(0.9999)),
        ("max", stats.latency_max_us()),
    ]
    .map(|(name, us)| (name, fmt_amount(us)));

    const LABEL: usize = 13;
    let width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value, note) in &rows {
        let line = format!("{label:<LABEL$}{value:>width$}  {note}");
        put!(out, "{}\n", line.trim_end());
    }
    // Latency as one row of headed columns: easier to compare across runs than six rows.
    let col = latency
        .iter()
        .map(|(name, v)| name.len().max(v.len()))
        .max()
        .unwrap_or(0)
        + 2;
    put!(out, "{:<LABEL$}", "latency µs");
    for (name, _) in &latency {
        put!(out, "{name:>col$}");
    }
    put!(out, "\n{:<LABEL$}", "");
    for (_, value) in &latency {
        put!(out, "{value:>col$}");
    }
    out.push('\n');
    out
}

/// The entries of `map`: first those named in `order` (in that order, when present), then the
/// rest in key order.
fn ordered<'a>(map: &'a BTreeMap<String, u64>, order: &[&str]) -> Vec<(&'a str, u64)> {
    let mut out: Vec<(&str, u64)> = order
        .iter()
        .filter_map(|k| map.get_key_value(*k))
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    out.extend(
        map.iter()
            .filter(|(k, _)| !order.contains(&k.as_str()))
            .map(|(k, n)| (k.as_str(), *n)),
    );
    out
}

fn breakdown(entries: &[(&str, u64)]) -> String {
    entries
        .iter()
        .map(|(k, n)| format!("{k} {}", group_u64(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1234567` → `1,234,567`.
fn group_u64(n: u64) -> String {
    group_digits(&n.to_string())
}

/// Inserts thousands separators into a plain run of digits (with an optional leading `-`).
fn group_digits(digits: &str) -> String {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits),
    };
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    out.push_str(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A measured amount (µs, msg/s): one decimal below 1,000, where the decimal still means
/// something; a whole number with thousands separators from 1,000 up.
fn fmt_amount(x: f64) -> String {
    let x = finite(x);
    if x.abs() < 999.95 {
        format!("{x:.1}")
    } else {
        group_digits(&format!("{x:.0}"))
    }
}

// ---------------------------------------------------------------------------------------------
// HdrHistogram percentile distribution
// ---------------------------------------------------------------------------------------------

/// Percentile ticks per half distance to 100%, as HdrHistogram's own tools print by default.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The latency distribution as HdrHistogram's `outputPercentileDistribution` text (the
/// `.hgrm` format), values in µs with three decimals, five percentile ticks per half distance
/// to 100%, with the `#[Mean …]`, `#[Max …]` and `#[Buckets …]` trailer. Paste it into the
/// HdrHistogram plotter (`plotFiles.html`) or feed it to any tool that reads `.hgrm` files.
pub fn hgrm(stats: &RunStats) -> String {
    let h = &stats.latency;
    let mut out = String::new();
    put!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value",
        "Percentile",
        "TotalCount",
        "1/(1-Percentile)"
    );
    let mut total: u64 = 0;
    for step in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        total = total.saturating_add(step.count_since_last_iteration());
        let value_us = ns_to_us(step.value_iterated_to());
        let q = step.quantile_iterated_to();
        if q < 1.0 {
            put!(
                out,
                "{value_us:12.3} {q:2.12} {total:10} {:14.2}\n",
                1.0 / (1.0 - q)
            );
        } else {
            // The 100% line has no finite 1/(1-p); HdrHistogram leaves the column out.
            put!(out, "{value_us:12.3} {q:2.12} {total:10}\n");
        }
    }
    put!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n",
        h.mean() / 1_000.0,
        h.stdev() / 1_000.0
    );
    put!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]\n",
        ns_to_us(h.max()),
        h.len()
    );
    // hdrhistogram does not expose its sub-bucket count; it is the smallest power of two that
    // holds 2 × 10^sigfig distinct values (2048 for 3 significant digits).
    let sub_buckets = (2 * 10_u32.pow(u32::from(h.sigfig()))).next_power_of_two();
    put!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]\n",
        h.buckets(),
        sub_buckets
    );
    out
}

fn ns_to_us(ns: u64) -> f64 {
    ns as f64 / 1_000.0
}

// ---------------------------------------------------------------------------------------------
// SVG plot
// ---------------------------------------------------------------------------------------------

/// A self-contained SVG picture of one run: latency by percentile (log scale of 1/(1-p), 0% to
/// 99.999%) above ACKs per second over time, with a legend giving p50, p99, p99.9 and max.
/// The same picture as [`svg_plot_many`] with one series.
pub fn svg_plot(stats: &RunStats, title: &str) -> String {
    svg_plot_many(&[("run", stats)], title)
}

/// Series colours: distinct hues that stay distinguishable for the common colour-vision
/// deficiencies in the first few entries; cycled when there are more series.
const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f",
];

const WIDTH: f64 = 960.0;
const MARGIN_LEFT: f64 = 95.0;
const MARGIN_RIGHT: f64 = 40.0;
const PLOT_WIDTH: f64 = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
const LATENCY_HEIGHT: f64 = 300.0;
const TIMELINE_HEIGHT: f64 = 200.0;
const LEGEND_LINE: f64 = 18.0;
/// The percentile axis ends at 99.999%, i.e. 1/(1-p) = 10^5.
const X_DECADES: f64 = 5.0;
/// Switch the latency axis to a log scale when max / p50 exceeds this: a linear axis would
/// squash everything below the tail into the bottom few pixels.
const LOG_Y_RATIO: f64 = 100.0;

/// Several runs in one SVG picture (for comparing systems): each run's latency-by-percentile
/// curve and its ACKs-per-second timeline overlaid in its own colour, with a legend naming
/// each series with its p50, p99, p99.9 and max (and its mean throughput).
///
/// The latency axis is linear, or logarithmic (and labelled so) when the largest max is more
/// than 100 times the smallest p50. Text is XML-escaped; empty histograms and timelines give
/// empty panels with a note, never NaN coordinates.
pub fn svg_plot_many(series: &[(&str, &RunStats)], title: &str) -> String {
    let mut svg = String::new();
    let mut y = 0.0;

    // Title, then panel (a): latency by percentile.
    y += 30.0;
    let title_y = y;
    y += 32.0;
    let heading_a = y;
    y += 13.0;
    let top_a = y;
    y += LATENCY_HEIGHT;
    let bottom_a = y;
    let legend_a = bottom_a + 58.0;
    let n_legend = count_f64(series.len().max(1));
    y = legend_a + LEGEND_LINE * (n_legend - 1.0);

    // Panel (b): throughput over time.
    y += 40.0;
    let heading_b = y;
    y += 13.0;
    let top_b = y;
    y += TIMELINE_HEIGHT;
    let bottom_b = y;
    let legend_b = bottom_b + 58.0;
    let height = legend_b + LEGEND_LINE * (n_legend - 1.0) + 22.0;

    put!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n",
        w = Px(WIDTH),
        h = Px(height)
    );
    put!(svg, "<title>{}</title>\n", Xml(title));
    put!(
        svg,
        "<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>\n",
        Px(WIDTH),
        Px(height)
    );
    put!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"18\" font-weight=\"bold\">{}</text>\n",
        Px(WIDTH / 2.0),
        Px(title_y),
        Xml(title)
    );

    latency_panel(&mut svg, series, heading_a, top_a, legend_a);
    timeline_panel(&mut svg, series, heading_b, top_b, legend_b);

    svg.push_str("</svg>\n");
    svg
}

/// A count as a float for layout arithmetic. Counts here are tiny (series, seconds), and the
/// conversion is exact below 2^53.
fn count_f64(n: usize) -> f64 {
    n as f64
}

/// Where on the percentile axis quantile `q` lies, in decades of 1/(1-q) (0 at 0%, 5 at
/// 99.999%), clamped to the axis (the 100% point lands on its right edge).
fn percentile_x(q: f64) -> f64 {
    let rest = 1.0 - q;
    if rest <= 10_f64.powf(-X_DECADES) {
        X_DECADES
    } else {
        (-rest.log10()).clamp(0.0, X_DECADES)
    }
}

/// How latency maps onto the vertical axis of panel (a).
#[derive(Clone, Copy)]
enum YScale {
    /// 0 at the bottom, `top` µs at the top, ticks every `step` µs.
    Linear { top: f64, step: f64 },
    /// 10^`lo` µs at the bottom, 10^`hi` µs at the top, a tick per decade.
    Log { lo: f64, hi: f64 },
}

impl YScale {
    /// Linear from 0 to a round number at or above `max`.
    fn linear(max: f64) -> Self {
        let (top, step) = nice_axis(max);
        Self::Linear { top, step }
    }

    /// The fraction of the axis height (0 at the bottom) where `v` goes, clamped to the axis.
    fn frac(self, v: f64) -> f64 {
        let f = match self {
            Self::Linear { top, .. } => v / top,
            Self::Log { lo, hi } if v > 0.0 => (v.log10() - lo) / (hi - lo),
            Self::Log { .. } => 0.0,
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// Tick values from bottom to top.
    fn ticks(self) -> Vec<f64> {
        match self {
            Self::Linear { top, step } => linear_ticks(top, step),
            Self::Log { lo, hi } => {
                let mut ticks = Vec::new();
                let mut e = lo;
                while e <= hi + 0.5 {
                    ticks.push(10_f64.powf(e));
                    e += 1.0;
                }
                ticks
            }
        }
    }
}

/// A round upper bound for an axis from 0 to `max` and its tick step (1, 2 or 5 × 10^k, five
/// to eight ticks), leaving a little headroom so that a curve at `max` does not vanish into
/// the frame. An empty range gets 0..1.
fn nice_axis(max: f64) -> (f64, f64) {
    if !(max.is_finite() && max > 0.0) {
        return (1.0, 0.2);
    }
    let step = nice_step(max / 6.0);
    let mut top = (max / step).ceil() * step;
    if top < max * 1.04 {
        top += step;
    }
    (top, step)
}

/// The 1, 2 or 5 × 10^k at or above `raw` (> 0).
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10_f64.powf(raw.log10().floor());
    let mantissa = raw / magnitude;
    let nice = if mantissa <= 1.0 {
        1.0
    } else if mantissa <= 2.0 {
        2.0
    } else if mantissa <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn linear_ticks(top: f64, step: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut i = 0_u32;
    loop {
        // Multiply rather than accumulate, so 0.1 steps don't drift into 0.30000000000000004.
        let v = f64::from(i) * step;
        if v > top * (1.0 + 1e-9) || i > 100 {
            break;
        }
        ticks.push(v);
        i += 1;
    }
    ticks
}

/// An axis tick label: thousands separators from 1,000 up, the shortest exact decimal below.
fn fmt_tick(v: f64) -> String {
    if v >= 999.5 {
        group_digits(&format!("{v:.0}"))
    } else {
        // Round off binary noise (0.30000000000000004) before printing the shortest form.
        format!("{}", (v * 1e6).round() / 1e6)
    }
}

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// Panel (a): latency by percentile.
fn latency_panel(
    svg: &mut String,
    series: &[(&str, &RunStats)],
    heading: f64,
    top: f64,
    legend: f64,
) {
    let bottom = top + LATENCY_HEIGHT;
    let recorded: Vec<&RunStats> = series
        .iter()
        .map(|(_, s)| *s)
        .filter(|s| !s.latency.is_empty())
        .collect();
    let max = recorded
        .iter()
        .map(|s| s.latency_max_us())
        .fold(0.0, f64::max);
    let min_p50 = recorded
        .iter()
        .map(|s| s.latency_us(0.5))
        .fold(f64::INFINITY, f64::min);
    let scale = if !recorded.is_empty() && min_p50 > 0.0 && max / min_p50 > LOG_Y_RATIO {
        let min = recorded
            .iter()
            .map(|s| ns_to_us(s.latency.min().max(1)))
            .fold(f64::INFINITY, f64::min);
        let lo = min.log10().floor();
        let hi = max.log10().ceil().max(lo + 1.0);
        YScale::Log { lo, hi }
    } else {
        YScale::linear(max)
    };
    let y_of = |us: f64| bottom - LATENCY_HEIGHT * scale.frac(us);
    let x_of = |q: f64| MARGIN_LEFT + PLOT_WIDTH * percentile_x(q) / X_DECADES;

    heading_text(svg, heading, "ACK latency by percentile");

    // Grid and ticks. Percentile ticks: 0%, 90%, 99%, … one per decade of 1/(1-p).
    let x_ticks = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];
    for (i, label) in x_ticks.iter().enumerate() {
        let x = MARGIN_LEFT + PLOT_WIDTH * count_f64(i) / X_DECADES;
        vertical_grid(svg, x, top, bottom, label);
    }
    for v in scale.ticks() {
        horizontal_grid(svg, y_of(v), &fmt_tick(v));
    }
    frame(svg, top, LATENCY_HEIGHT);
    axis_labels(
        svg,
        top,
        LATENCY_HEIGHT,
        "percentile (log scale of 1/(1-p))",
        match scale {
            YScale::Linear { .. } => "latency (µs)",
            YScale::Log { .. } => "latency (µs, log scale)",
        },
    );

    if recorded.is_empty() {
        empty_note(svg, top, LATENCY_HEIGHT, "no latency recorded");
    }
    for (i, (_, stats)) in series.iter().enumerate() {
        if stats.latency.is_empty() {
            continue;
        }
        let points: Vec<(f64, f64)> = stats
            .latency
            .iter_quantiles(TICKS_PER_HALF_DISTANCE)
            .map(|step| {
                (
                    x_of(step.quantile_iterated_to()),
                    y_of(ns_to_us(step.value_iterated_to())),
                )
            })
            .collect();
        polyline(svg, &points, colour(i));
    }

    for (i, (name, stats)) in series.iter().enumerate() {
        let text = if stats.latency.is_empty() {
            format!("{name}: no latency recorded")
        } else {
            format!(
                "{name}: p50 {} µs · p99 {} µs · p99.9 {} µs · max {} µs · {} ACKs",
                fmt_amount(stats.latency_us(0.5)),
                fmt_amount(stats.latency_us(0.99)),
                fmt_amount(stats.latency_us(0.999)),
                fmt_amount(stats.latency_max_us()),
                group_u64(stats.latency.len()),
            )
        };
        legend_entry(svg, legend + LEGEND_LINE * count_f64(i), colour(i), &text);
    }
}

/// Panel (b): ACKs per second over time, one step line per series.
fn timeline_panel(
    svg: &mut String,
    series: &[(&str, &RunStats)],
    heading: f64,
    top: f64,
    legend: f64,
) {
    let bottom = top + TIMELINE_HEIGHT;
    let seconds = series
        .iter()
        .map(|(_, s)| s.timeline.len())
        .max()
        .unwrap_or(0);
    let peak = series
        .iter()
        .flat_map(|(_, s)| s.timeline.iter().copied())
        .max()
        .unwrap_or(0);
    let (y_top, y_step) = nice_axis(peak as f64);
    let x_span = count_f64(seconds.max(1));
    let x_step = nice_step(x_span / 8.0).max(1.0);
    let x_top = (x_span / x_step).ceil() * x_step;
    let x_of = |t: f64| MARGIN_LEFT + PLOT_WIDTH * (t / x_top).clamp(0.0, 1.0);
    let y_of = |v: f64| bottom - TIMELINE_HEIGHT * (v / y_top).clamp(0.0, 1.0);

    heading_text(svg, heading, "Throughput: ACKs per second");
    for t in linear_ticks(x_top, x_step) {
        vertical_grid(svg, x_of(t), top, bottom, &fmt_tick(t));
    }
    for v in linear_ticks(y_top, y_step) {
        horizontal_grid(svg, y_of(v), &fmt_tick(v));
    }
    frame(svg, top, TIMELINE_HEIGHT);
    axis_labels(svg, top, TIMELINE_HEIGHT, "time (s)", "ACKs/s");

    if seconds == 0 {
        empty_note(svg, top, TIMELINE_HEIGHT, "no ACKs recorded");
    }
    for (i, (_, stats)) in series.iter().enumerate() {
        // A step line: each second's count is flat across that second.
        let mut points = Vec::with_capacity(stats.timeline.len() * 2);
        for (t, &n) in stats.timeline.iter().enumerate() {
            let y = y_of(n as f64);
            points.push((x_of(count_f64(t)), y));
            points.push((x_of(count_f64(t + 1)), y));
        }
        if !points.is_empty() {
            polyline(svg, &points, colour(i));
        }
    }

    for (i, (name, stats)) in series.iter().enumerate() {
        let text = format!(
            "{name}: mean {} ACKs/s over {:.1} s · sent {} · errors {}",
            fmt_amount(stats.throughput_msgs_per_s()),
            finite(stats.duration_s),
            group_u64(stats.sent),
            group_u64(stats.error_total()),
        );
        legend_entry(svg, legend + LEGEND_LINE * count_f64(i), colour(i), &text);
    }
}

fn heading_text(svg: &mut String, y: f64, text: &str) {
    put!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
        Px(MARGIN_LEFT),
        Px(y),
        Xml(text)
    );
}

/// A light vertical grid line at `x` with its tick label under the plot.
fn vertical_grid(svg: &mut String, x: f64, top: f64, bottom: f64, label: &str) {
    put!(
        svg,
        "<line x1=\"{x}\" y1=\"{t}\" x2=\"{x}\" y2=\"{b}\" stroke=\"#e0e0e0\"/>\n\
         <text x=\"{x}\" y=\"{ly}\" text-anchor=\"middle\">{}</text>\n",
        Xml(label),
        x = Px(x),
        t = Px(top),
        b = Px(bottom),
        ly = Px(bottom + 16.0)
    );
}

/// A light horizontal grid line at `y` with its tick label left of the plot.
fn horizontal_grid(svg: &mut String, y: f64, label: &str) {
    put!(
        svg,
        "<line x1=\"{l}\" y1=\"{y}\" x2=\"{r}\" y2=\"{y}\" stroke=\"#e0e0e0\"/>\n\
         <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{}</text>\n",
        Xml(label),
        l = Px(MARGIN_LEFT),
        r = Px(MARGIN_LEFT + PLOT_WIDTH),
        y = Px(y),
        lx = Px(MARGIN_LEFT - 6.0),
        ty = Px(y + 4.0)
    );
}

fn frame(svg: &mut String, top: f64, height: f64) {
    put!(
        svg,
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444444\"/>\n",
        Px(MARGIN_LEFT),
        Px(top),
        Px(PLOT_WIDTH),
        Px(height)
    );
}

fn axis_labels(svg: &mut String, top: f64, height: f64, x_label: &str, y_label: &str) {
    let mid_y = top + height / 2.0;
    put!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text x=\"{x}\" y=\"{y}\" text-anchor=\"middle\" transform=\"rotate(-90 {x} {y})\">{}</text>\n",
        Px(MARGIN_LEFT + PLOT_WIDTH / 2.0),
        Px(top + height + 34.0),
        Xml(x_label),
        Xml(y_label),
        x = Px(22.0),
        y = Px(mid_y)
    );
}

fn empty_note(svg: &mut String, top: f64, height: f64, text: &str) {
    put!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#888888\">{}</text>\n",
        Px(MARGIN_LEFT + PLOT_WIDTH / 2.0),
        Px(top + height / 2.0),
        Xml(text)
    );
}

fn polyline(svg: &mut String, points: &[(f64, f64)], colour: &str) {
    put!(
        svg,
        "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\""
    );
    for (i, (x, y)) in points.iter().enumerate() {
        put!(
            svg,
            "{}{},{}",
            if i == 0 { "" } else { " " },
            Px(*x),
            Px(*y)
        );
    }
    svg.push_str("\"/>\n");
}

fn legend_entry(svg: &mut String, y: f64, colour: &str, text: &str) {
    put!(
        svg,
        "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"3\"/>\n\
         <text x=\"{}\" y=\"{}\">{}</text>\n",
        Px(MARGIN_LEFT),
        Px(MARGIN_LEFT + 24.0),
        Px(MARGIN_LEFT + 32.0),
        Px(y),
        Xml(text),
        ly = Px(y - 4.0)
    );
}

/// A coordinate, printed with one decimal. Never prints NaN or infinities: a non-finite value
/// (which the layout code should not produce) becomes 0 rather than an invalid document.
struct Px(f64);

impl std::fmt::Display for Px {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1}", finite(self.0))
    }
}

/// Text escaped for XML content and attribute values. Characters XML 1.0 forbids (control
/// characters other than tab, newline and carriage return) become U+FFFD, so that a strange
/// run name cannot make the document unreadable.
struct Xml<'a>(&'a str);

impl std::fmt::Display for Xml<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&apos;")?,
                '\t' | '\n' | '\r' => f.write_char(c)?,
                c if c.is_control() => f.write_char('\u{fffd}')?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Interval;
    use simd_json::prelude::{ValueAsMutObject, Writable};

    /// A run with a realistic shape: mostly AA around a few hundred µs, a tail into tens of
    /// ms, a few odd codes and errors, a timeline and some meta with characters that need
    /// escaping. Deterministic (a small LCG), so failures reproduce.
    fn sample_run(seed: u64, n: u64) -> RunStats {
        let mut run = RunStats::default();
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        // One interval per second, as the sending threads hand them over.
        let mut iv = Interval::default();
        let mut second = 0;
        for i in 0..n {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let r = state >> 33; // 31 random bits
            let latency_ns = match r % 1_000 {
                0 => 20_000_000 + r % 30_000_000,    // 0.1%: 20–50 ms
                1..=20 => 2_000_000 + r % 5_000_000, // 2%: 2–7 ms
                _ => 150_000 + r % 400_000,          // the body: 150–550 µs
            };
            let now = usize::try_from(i * 10 / n).unwrap();
            if now != second {
                run.add_interval(&iv.take(), second);
                second = now;
            }
            iv.sent += 1;
            let code: &[u8] = match r % 97 {
                0 => b"AE",
                1 => b"ZZ",
                _ => b"AA",
            };
            iv.ack(code, latency_ns);
            if r.is_multiple_of(211) {
                iv.error(ErrorKind::AckTimeout);
            }
            if r.is_multiple_of(503) {
                iv.error(ErrorKind::Io);
                iv.reconnects += 1;
            }
        }
        if n > 0 {
            run.add_interval(&iv, second);
        }
        run.duration_s = 10.0 + f64::from(u32::try_from(seed % 7).unwrap()) / 3.0;
        run.warmup_sent = seed * 100 + 3;
        run.warmup_acked = seed * 100 + 1;
        run.process_cpu_s = 1.5 + f64::from(u32::try_from(seed % 11).unwrap()) / 7.0;
        run.meta.insert("mode".to_owned(), "open".to_owned());
        run.meta.insert(
            "target".to_owned(),
            "tls://ehr.example:2575 \"<&>\" é".to_owned(),
        );
        run
    }

    fn assert_same(a: &RunStats, b: &RunStats) {
        assert_eq!(a.sent, b.sent);
        assert_eq!(a.acked, b.acked);
        assert_eq!(a.ack_codes, b.ack_codes);
        assert_eq!(a.errors, b.errors);
        assert_eq!(a.reconnects, b.reconnects);
        assert_eq!(a.warmup_sent, b.warmup_sent);
        assert_eq!(a.warmup_acked, b.warmup_acked);
        assert_eq!(a.process_cpu_s.to_bits(), b.process_cpu_s.to_bits());
        assert_eq!(a.duration_s.to_bits(), b.duration_s.to_bits());
        assert_eq!(a.timeline, b.timeline);
        assert_eq!(a.meta, b.meta);
        assert_eq!(a.latency, b.latency);
        assert_eq!(
            (a.latency.low(), a.latency.high(), a.latency.sigfig()),
            (b.latency.low(), b.latency.high(), b.latency.sigfig())
        );
        assert_eq!(a.latency.mean().to_bits(), b.latency.mean().to_bits());
    }

    fn parse(bytes: &[u8]) -> OwnedValue {
        simd_json::to_owned_value(&mut bytes.to_vec()).unwrap()
    }

    #[test]
    fn json_round_trip_is_exact() {
        let mut run = sample_run(1, 20_000);
        run.duration_s = 60.123_456_789_012_34;
        run.sent = u64::MAX - 1; // beyond i64: must survive as an integer
        let mut bytes = to_json(&run);
        let back = from_json(&mut bytes).unwrap();
        assert_same(&run, &back);
    }

    #[test]
    fn json_round_trip_of_an_empty_run() {
        let run = RunStats::default();
        let back = from_json(&mut to_json(&run)).unwrap();
        assert_same(&run, &back);
        assert!(back.latency.is_empty());
    }

    #[test]
    fn json_has_the_documented_layout() {
        let run = sample_run(2, 5_000);
        let doc = parse(&to_json(&run));
        let doc = doc.as_object().unwrap();
        for key in [
            "format_version",
            "sent",
            "acked",
            "ack_codes",
            "errors",
            "reconnects",
            "warmup_sent",
            "warmup_acked",
            "process_cpu_s",
            "duration_s",
            "throughput_msgs_per_s",
            "latency_us",
            "histogram_unit",
            "histogram",
            "timeline_acked_per_s",
            "meta",
        ] {
            assert!(doc.contains_key(key), "{key} missing");
        }
        assert_eq!(doc["format_version"].as_u64(), Some(1));
        assert_eq!(doc["histogram_unit"].as_str(), Some("ns"));
        assert_eq!(doc["ack_codes"]["AA"].as_u64(), Some(run.ack_codes["AA"]));
        let latency = doc["latency_us"].as_object().unwrap();
        for key in ["p50", "p90", "p99", "p999", "p9999", "max", "mean"] {
            assert!(
                latency[key].as_f64().is_some(),
                "latency_us.{key} is not a float"
            );
        }
        assert_eq!(latency["count"].as_u64(), Some(5_000));
        assert_eq!(latency["p99"].as_f64(), Some(run.latency_us(0.99)));
        assert_eq!(
            doc["throughput_msgs_per_s"].as_f64(),
            Some(run.throughput_msgs_per_s())
        );
        assert_eq!(doc["timeline_acked_per_s"].as_array().unwrap().len(), 10);
    }

    #[test]
    fn the_histogram_is_the_standard_hdrhistogram_encoding() {
        let run = sample_run(3, 1_000);
        let doc = parse(&to_json(&run));
        let encoded = doc["histogram"].as_str().unwrap();
        // "HISTF" is how every base64 V2-deflate HdrHistogram begins (cookie 0x1c849304).
        assert!(encoded.starts_with("HISTFAAA"), "{encoded}");
        let raw = base64_decode(encoded).unwrap();
        let h: Histogram<u64> = Deserializer::new().deserialize(&mut &raw[..]).unwrap();
        assert_eq!(h, run.latency);
    }

    #[test]
    fn a_missing_key_is_named() {
        let bytes = to_json(&sample_run(4, 100));
        for key in [
            "format_version",
            "histogram_unit",
            "sent",
            "acked",
            "ack_codes",
            "errors",
            "reconnects",
            "duration_s",
            "histogram",
            "timeline_acked_per_s",
            "meta",
        ] {
            let mut doc = parse(&bytes);
            doc.as_object_mut().unwrap().remove(key);
            let mut edited = doc.encode().into_bytes();
            let err = from_json(&mut edited).unwrap_err();
            assert!(
                matches!(&err, ReportError::MissingKey(k) if k == key),
                "{key}: {err:?}"
            );
            assert!(err.to_string().contains(&format!("`{key}`")), "{err}");
        }
    }

    #[test]
    fn documents_without_the_warmup_and_cpu_keys_read_as_zero() {
        let run = sample_run(8, 100);
        assert!(run.warmup_sent > 0 && run.process_cpu_s > 0.0);
        let mut doc = parse(&to_json(&run));
        let object = doc.as_object_mut().unwrap();
        for key in ["warmup_sent", "warmup_acked", "process_cpu_s"] {
            assert!(object.remove(key).is_some(), "{key} was written");
        }
        let back = from_json(&mut doc.encode().into_bytes()).unwrap();
        assert_eq!((back.warmup_sent, back.warmup_acked), (0, 0));
        assert_eq!(back.process_cpu_s, 0.0);
        assert_eq!(back.sent, run.sent);
        // Present but wrong is still an error naming the key.
        let mut doc = parse(&to_json(&run));
        let object = doc.as_object_mut().unwrap();
        object.insert("warmup_sent".to_owned(), "3".into());
        let err = from_json(&mut doc.encode().into_bytes()).unwrap_err();
        assert!(err.to_string().contains("`warmup_sent`"), "{err}");
    }

    #[test]
    fn derived_keys_are_not_needed() {
        let run = sample_run(5, 100);
        let mut doc = parse(&to_json(&run));
        let object = doc.as_object_mut().unwrap();
        object.remove("latency_us");
        object.remove("throughput_msgs_per_s");
        let back = from_json(&mut doc.encode().into_bytes()).unwrap();
        assert_same(&run, &back);
    }

    #[test]
    fn bad_values_are_named() {
        let bytes = to_json(&sample_run(6, 100));
        let edit = |key: &str, value: OwnedValue| {
            let mut doc = parse(&bytes);
            doc.as_object_mut().unwrap().insert(key.to_owned(), value);
            from_json(&mut doc.encode().into_bytes()).unwrap_err()
        };

        let err = edit("histogram", "HISTF!!!".into());
        assert!(matches!(err, ReportError::Base64(_)), "{err:?}");
        assert!(err.to_string().contains("`histogram`"), "{err}");

        let err = edit("histogram", base64_encode(b"not a histogram").into());
        assert!(matches!(err, ReportError::Histogram(_)), "{err:?}");
        assert!(err.to_string().contains("HdrHistogram"), "{err}");

        let err = edit("sent", "12".into());
        assert!(err.to_string().contains("`sent`"), "{err}");

        let err = edit("format_version", 2_u64.into());
        assert!(matches!(err, ReportError::UnsupportedVersion(2)), "{err:?}");

        let err = edit("histogram_unit", "us".into());
        assert!(matches!(err, ReportError::HistogramUnit(_)), "{err:?}");

        let mut codes = Object::default();
        codes.insert("AA".to_owned(), (-1_i64).into());
        let err = edit("ack_codes", OwnedValue::from(codes));
        assert!(err.to_string().contains("`ack_codes.AA`"), "{err}");

        let err = from_json(&mut b"[1, 2]".to_vec()).unwrap_err();
        assert!(err.to_string().contains("object"), "{err}");
        let err = from_json(&mut b"{\"sent\": ".to_vec()).unwrap_err();
        assert!(matches!(err, ReportError::Json(_)), "{err:?}");
    }

    #[test]
    fn an_integer_duration_is_accepted() {
        let bytes = to_json(&sample_run(7, 10));
        let mut doc = parse(&bytes);
        doc.as_object_mut()
            .unwrap()
            .insert("duration_s".to_owned(), 60_u64.into());
        let back = from_json(&mut doc.encode().into_bytes()).unwrap();
        assert_eq!(back.duration_s, 60.0);
    }

    #[test]
    fn a_histogram_with_foreign_bounds_is_brought_to_ours() {
        let mut foreign = Histogram::<u64>::new_with_bounds(1_000, 10_000_000_000, 2).unwrap();
        foreign.record_n(250_000, 10).unwrap();
        foreign.record(9_000_000_000).unwrap();
        let mut doc = parse(&to_json(&RunStats::default()));
        doc.as_object_mut().unwrap().insert(
            "histogram".to_owned(),
            base64_encode(&serialize_histogram(&foreign)).into(),
        );
        let back = from_json(&mut doc.encode().into_bytes()).unwrap();
        assert_eq!(back.latency.high(), LATENCY_MAX_NS);
        assert_eq!(back.latency.len(), 11);
        // Still mergeable with anything this project records.
        let merged = merge(&[back, sample_run(8, 100)]);
        assert_eq!(merged.latency.len(), 111);

        // Beyond one hour cannot be represented: an error, not a panic in a later merge.
        let mut huge = Histogram::<u64>::new_with_bounds(1, 2 * LATENCY_MAX_NS, 3).unwrap();
        huge.record(2 * LATENCY_MAX_NS).unwrap();
        doc.as_object_mut().unwrap().insert(
            "histogram".to_owned(),
            base64_encode(&serialize_histogram(&huge)).into(),
        );
        let err = from_json(&mut doc.encode().into_bytes()).unwrap_err();
        assert!(matches!(err, ReportError::HistogramRange), "{err:?}");
    }

    #[test]
    fn merging_round_tripped_parts_equals_one_run() {
        // Record the same events once into a single run and spread over three "processes".
        let mut one = RunStats::default();
        let mut parts = [
            RunStats::default(),
            RunStats::default(),
            RunStats::default(),
        ];
        for second in 0..9_usize {
            let mut one_iv = Interval::default();
            let mut part_ivs = [
                Interval::default(),
                Interval::default(),
                Interval::default(),
            ];
            for i in (u64::try_from(second).unwrap()..30_000).step_by(9) {
                let part = usize::try_from(i % 3).unwrap();
                for iv in [&mut one_iv, &mut part_ivs[part]] {
                    iv.sent += 1;
                    let code: &[u8] = if i.is_multiple_of(13) { b"AR" } else { b"AA" };
                    iv.ack(code, 90_000 + (i * 7_919) % 5_000_000);
                    if i.is_multiple_of(101) {
                        iv.error(ErrorKind::BadAck);
                    }
                }
            }
            one.add_interval(&one_iv, second);
            for (run, iv) in parts.iter_mut().zip(&part_ivs) {
                run.add_interval(iv, second);
            }
        }
        one.duration_s = 9.0;
        for p in &mut parts {
            p.duration_s = 9.0;
        }
        let restored: Vec<RunStats> = parts
            .iter()
            .map(|p| from_json(&mut to_json(p)).unwrap())
            .collect();
        let merged = merge(&restored);
        assert_same(&one, &merged);
        assert_eq!(merged.latency_us(0.99), one.latency_us(0.99));
    }

    #[test]
    fn merging_nothing_gives_an_empty_run() {
        let empty = merge(&[]);
        assert_same(&empty, &RunStats::default());
    }

    #[test]
    fn the_table_shows_the_numbers() {
        let mut run = RunStats::default();
        let mut iv = Interval {
            sent: 1_234_567,
            ..Interval::default()
        };
        for _ in 0..90 {
            iv.ack(b"AA", 812_300);
        }
        for _ in 0..9 {
            iv.ack(b"CA", 1_500_000);
        }
        iv.ack(b"AE", 42_000_000);
        iv.ack(b"XY", 500);
        iv.errors(ErrorKind::AckTimeout, 3);
        iv.reconnects = 2;
        run.add_interval(&iv, 0);
        run.duration_s = 10.0;
        let table = summary_table(&run);

        assert!(table.contains("1,234,567"), "{table}");
        assert!(table.contains("AA 90, AE 1, CA 9, XY 1"), "{table}");
        assert!(table.contains("ack_timeout 3"), "{table}");
        assert!(table.contains("10.1  msg/s"), "{table}"); // 101 ACKs over 10 s
        assert!(table.contains("10.0  s"), "{table}");
        // p50 under 1,000 µs with a decimal; p99 and max as whole µs with separators.
        let p50 = fmt_amount(run.latency_us(0.5));
        assert!(p50.starts_with("812.") && table.contains(&p50), "{table}");
        let p99 = fmt_amount(run.latency_us(0.99));
        assert!(p99.starts_with("1,50") && table.contains(&p99), "{table}");
        let max = fmt_amount(run.latency_max_us());
        assert!(max.starts_with("42,0") && table.contains(&max), "{table}");
        for header in ["p50", "p90", "p99", "p99.9", "p99.99", "max"] {
            assert!(table.contains(header), "{table}");
        }
        // The six counters' values end in one column.
        let lines: Vec<&str> = table.lines().collect();
        let end = lines[0].find("1,234,567").unwrap() + "1,234,567".len();
        for line in &lines[..6] {
            assert!(line.as_bytes()[end - 1].is_ascii_digit(), "{table}");
            assert!(line.len() == end || line.as_bytes()[end] == b' ', "{table}");
        }
        assert_eq!(lines.len(), 8, "{table}");

        let clean = summary_table(&RunStats::default());
        assert!(clean.contains("none"), "{clean}");
    }

    #[test]
    fn amounts_are_formatted_for_people() {
        assert_eq!(fmt_amount(0.0), "0.0");
        assert_eq!(fmt_amount(812.34), "812.3");
        assert_eq!(fmt_amount(999.96), "1,000");
        assert_eq!(fmt_amount(1_234_567.8), "1,234,568");
        assert_eq!(fmt_amount(f64::NAN), "0.0");
        assert_eq!(group_u64(0), "0");
        assert_eq!(group_u64(100), "100");
        assert_eq!(group_u64(1_000), "1,000");
        assert_eq!(group_u64(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn hgrm_is_the_hdrhistogram_percentile_format() {
        let run = sample_run(9, 50_000);
        let text = hgrm(&run);
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines.next().unwrap(), "");

        let body: Vec<&str> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with("#["))
            .collect();
        assert!(body.len() > 50, "{text}");
        let rows: Vec<Vec<f64>> = body
            .iter()
            .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
            .collect();
        assert_eq!(rows[0][1], 0.0);
        for pair in rows.windows(2) {
            assert!(pair[1][0] >= pair[0][0], "values decrease: {pair:?}");
            assert!(pair[1][1] >= pair[0][1], "percentiles decrease: {pair:?}");
            assert!(pair[1][2] >= pair[0][2], "counts decrease: {pair:?}");
        }
        let last = rows.last().unwrap();
        assert_eq!(last.len(), 3, "the 100% line has no 1/(1-p) column");
        assert_eq!(last[1], 1.0);
        assert_eq!(last[0], ns_to_us(run.latency.max()));
        assert_eq!(
            body.last().unwrap().split_whitespace().next().unwrap(),
            format!("{:.3}", ns_to_us(run.latency.max()))
        );
        assert_eq!(last[2], 50_000.0);
        // The 50% tick, as HdrHistogram prints it.
        assert!(
            body.iter()
                .any(|l| l.contains(" 0.500000000000 ") && l.ends_with("2.00"))
        );

        let trailer: Vec<&str> = text.lines().filter(|l| l.starts_with("#[")).collect();
        assert_eq!(trailer.len(), 3);
        assert!(
            trailer[0].starts_with("#[Mean    = ") && trailer[0].contains(", StdDeviation   = ")
        );
        assert_eq!(
            trailer[1],
            format!(
                "#[Max     = {:12.3}, Total count    = {:12}]",
                ns_to_us(run.latency.max()),
                50_000
            )
        );
        assert_eq!(
            trailer[2],
            format!(
                "#[Buckets = {:12}, SubBuckets     = {:12}]",
                run.latency.buckets(),
                2048
            )
        );
    }

    #[test]
    fn hgrm_of_an_empty_run_is_just_header_and_trailer() {
        let text = hgrm(&RunStats::default());
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.contains("Total count    =            0]"));
        assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    }

    /// Checks that every tag is closed in order (or self-closing) and returns the element
    /// names seen. Good enough for the subset of SVG this module writes (no comments, CDATA or
    /// `>` inside attribute values).
    fn check_well_formed(svg: &str) -> Vec<String> {
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        let mut stack: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("unterminated tag") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "`<` inside a tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else {
                let name: String = tag
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                assert!(!name.is_empty(), "empty tag name: {tag}");
                if !tag.ends_with('/') {
                    stack.push(name.clone());
                }
                seen.push(name);
            }
            // Text between tags must not hold a raw `&` that is not an entity.
            rest = &rest[end + 1..];
            let text = &rest[..rest.find('<').unwrap_or(rest.len())];
            for (i, _) in text.match_indices('&') {
                let entity = &text[i..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                        .iter()
                        .any(|e| entity.starts_with(e)),
                    "raw & in text: {text}"
                );
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        seen
    }

    fn assert_no_bad_numbers(svg: &str) {
        assert!(!svg.contains("NaN"), "NaN in output");
        assert!(!svg.contains("inf"), "inf in output");
    }

    #[test]
    fn svg_is_well_formed_and_escapes_the_title() {
        let run = sample_run(10, 20_000);
        let svg = svg_plot(&run, "ADT <A01> & \"friends\" 'n' stuff\u{1}");
        let elements = check_well_formed(&svg);
        for name in ["svg", "title", "rect", "line", "text", "polyline"] {
            assert!(elements.iter().any(|e| e == name), "no <{name}>");
        }
        assert!(
            svg.contains("ADT &lt;A01&gt; &amp; &quot;friends&quot; &apos;n&apos; stuff\u{fffd}")
        );
        assert!(!svg.contains("<A01>"));
        for label in [
            "0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "time (s)", "ACKs/s",
        ] {
            assert!(svg.contains(&format!(">{label}<")), "no label {label}");
        }
        // The legend gives the headline percentiles.
        let legend = format!("p50 {} µs", fmt_amount(run.latency_us(0.5)));
        assert!(svg.contains(&legend), "{legend}");
        assert!(svg.contains(&format!("max {} µs", fmt_amount(run.latency_max_us()))));
        assert_no_bad_numbers(&svg);
    }

    #[test]
    fn svg_of_an_empty_run_has_no_bad_numbers() {
        let svg = svg_plot(&RunStats::default(), "empty");
        check_well_formed(&svg);
        assert_no_bad_numbers(&svg);
        assert!(svg.contains("no latency recorded"));
        assert!(svg.contains("no ACKs recorded"));

        let svg = svg_plot_many(&[], "nothing at all");
        check_well_formed(&svg);
        assert_no_bad_numbers(&svg);

        // One sample: a degenerate histogram (min = max) and a one-second timeline.
        let mut one = RunStats::default();
        let mut iv = Interval::default();
        iv.ack(b"AA", 1);
        one.add_interval(&iv, 0);
        let svg = svg_plot(&one, "one");
        check_well_formed(&svg);
        assert_no_bad_numbers(&svg);
    }

    #[test]
    fn svg_many_overlays_series_and_picks_the_scale() {
        let fast = sample_run(11, 10_000);
        let mut slow = RunStats::default();
        let mut iv = Interval::default();
        for i in 0..1_000_u64 {
            iv.ack(b"AA", 5_000_000 + i * 1_000);
        }
        slow.add_interval(&iv, 3);
        slow.duration_s = 4.0;
        let svg = svg_plot_many(
            &[
                ("relay", &fast),
                ("direct", &slow),
                ("empty", &RunStats::default()),
            ],
            "compare",
        );
        check_well_formed(&svg);
        assert_no_bad_numbers(&svg);
        assert_eq!(
            svg.matches("<polyline").count(),
            4,
            "two latency curves, two timelines"
        );
        for name in ["relay: p50", "direct: p50", "empty: no latency recorded"] {
            assert!(svg.contains(name), "{name}");
        }
        assert!(svg.contains(colour(0)) && svg.contains(colour(1)));
        // max (≈50 ms) / smallest p50 (≈350 µs) > 100: log scale, and it says so.
        assert!(svg.contains("latency (µs, log scale)"));

        let narrow = svg_plot(&slow, "narrow");
        assert!(narrow.contains(">latency (µs)<"));
    }
}
