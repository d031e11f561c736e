//! The report: one JSON object with a row per trace and recommender and a summary comparing lazyscale
//! with the VPA and with the DPA's published method (and, when it ran, with itself without the update
//! gate: `update_gate`; the changes applied by every recommender: `changes`), and a self-contained HTML chart per trace (inline
//! SVG: usage against each recommender's request over time).

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use crate::replay::{NodeModel, Policy, Replay, Score};
use crate::trace::{GIB, Trace};

/// Name of the lazyscale recommender the summary is about.
pub const LAZYSCALE: &str = "lazyscale";
/// Name of the same lazyscale recommender without the update gate.
pub const LAZYSCALE_UNGATED: &str = "lazyscale_ungated";
/// Name of the VPA baseline.
pub const VPA: &str = "vpa";
/// Name of the DPA method baseline.
pub const DPA: &str = "dpa_method";

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Trace name.
    pub trace: String,
    /// Recommender name.
    pub recommender: String,
    /// Its scores.
    #[serde(flatten)]
    pub score: Score,
}

/// lazyscale compared with another recommender over the whole trace set.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// lazyscale's CPU waste / the other's (`None` when the other wastes nothing).
    pub cpu_waste_ratio: Option<f64>,
    /// lazyscale's memory waste / the other's.
    pub memory_waste_ratio: Option<f64>,
    /// lazyscale's OOM kills − the other's.
    pub oom_kills_delta: i64,
    /// lazyscale's starved minutes − the other's.
    pub starved_minutes_delta: i64,
}

/// Sum of the scores of `recommender` over every trace.
pub fn total(rows: &[Row], recommender: &str) -> Score {
    let mut t = Score::default();
    rows.iter()
        .filter(|r| r.recommender == recommender)
        .for_each(|r| t.add(&r.score));
    t
}

/// lazyscale ([`LAZYSCALE`]) against `other`, over the summed scores.
pub fn compare(rows: &[Row], other: &str) -> Comparison {
    let (l, o) = (total(rows, LAZYSCALE), total(rows, other));
    let ratio = |a: f64, b: f64| (b > 0.0).then(|| round4(a / b));
    let delta = |a: u64, b: u64| i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX);
    Comparison {
        cpu_waste_ratio: ratio(l.cpu_waste_core_hours, o.cpu_waste_core_hours),
        memory_waste_ratio: ratio(l.memory_waste_gib_hours, o.memory_waste_gib_hours),
        oom_kills_delta: delta(l.oom_kills, o.oom_kills),
        starved_minutes_delta: delta(l.starved_minutes, o.starved_minutes),
    }
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

fn rounded(s: &Score) -> Score {
    let r = |v: f64| (v * 100.0).round() / 100.0;
    Score {
        cpu_requested_core_hours: r(s.cpu_requested_core_hours),
        cpu_used_core_hours: r(s.cpu_used_core_hours),
        cpu_waste_core_hours: r(s.cpu_waste_core_hours),
        memory_requested_gib_hours: r(s.memory_requested_gib_hours),
        memory_used_gib_hours: r(s.memory_used_gib_hours),
        memory_waste_gib_hours: r(s.memory_waste_gib_hours),
        ..s.clone()
    }
}

/// The report object: `{"traces": [...], "summary": {...}, "settings": {...}}`.
pub fn report(rows: &[Row], policy: &Policy, node: &NodeModel, settings: Value) -> Value {
    let traces: Vec<Row> = rows
        .iter()
        .map(|r| Row {
            score: rounded(&r.score),
            ..r.clone()
        })
        .collect();
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        if !names.contains(&r.recommender.as_str()) {
            names.push(&r.recommender);
        }
    }
    let changes: serde_json::Map<String, Value> = names
        .iter()
        .map(|n| ((*n).to_owned(), json!(total(rows, n).changes)))
        .collect();
    let mut summary = json!({
        "lazyscale_vs_vpa": compare(rows, VPA),
        "lazyscale_vs_dpa_method": compare(rows, DPA),
        "changes": changes,
    });
    if names.contains(&LAZYSCALE_UNGATED)
        && let Some(o) = summary.as_object_mut()
    {
        o.insert("update_gate".into(), json!(compare(rows, LAZYSCALE_UNGATED)));
    }
    json!({
        "traces": traces,
        "summary": summary,
        "settings": {
            "policy": policy,
            "node": node,
            "run": settings,
        },
    })
}

const COLORS: [&str; 6] = ["#1b9e77", "#7570b3", "#377eb8", "#e6550d", "#984ea3", "#a6761d"];

/// A self-contained HTML page charting `trace` with each recommender's replay (`(name, replay)`).
pub fn chart_html(trace: &Trace, replays: &[(String, &Replay)], rows: &[Row]) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{0}</title>\
         <style>body{{font-family:sans-serif;margin:1em 2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style></head><body>\
         <h1>{0}</h1><p>{1}</p>",
        escape(&trace.name),
        escape(&trace.description)
    );
    html.push_str(
        "<table><tr><th>recommender</th><th>CPU waste (core-h)</th><th>memory waste (GiB-h)</th>\
         <th>OOM kills</th><th>starved min</th><th>changes</th></tr>",
    );
    for r in rows.iter().filter(|r| r.trace == trace.name) {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.recommender),
            r.score.cpu_waste_core_hours,
            r.score.memory_waste_gib_hours,
            r.score.oom_kills,
            r.score.starved_minutes,
            r.score.changes
        );
    }
    html.push_str("</table>");
    for spec in &trace.containers {
        for (resource, unit) in [("cpu", "cores"), ("memory", "GiB")] {
            let _ = write!(html, "<h2>{} — {resource} ({unit})</h2>", escape(&spec.name));
            html.push_str(&svg(trace, &spec.name, resource == "cpu", replays));
        }
    }
    html.push_str("</body></html>\n");
    html
}

/// Points per chart (the trace is reduced to this many buckets: usage max and mean, request max).
const BUCKETS: usize = 672;

fn svg(trace: &Trace, container: &str, cpu: bool, replays: &[(String, &Replay)]) -> String {
    let (w, h, left, top) = (1100.0, 280.0, 60.0, 10.0);
    let (pw, ph) = (w - left - 160.0, h - top - 30.0);
    let per = trace.minutes.div_ceil(BUCKETS).max(1);
    let n = trace.minutes.div_ceil(per);
    let value = |i: usize, s: &crate::trace::Series| {
        if cpu {
            s.cpu_cores[i]
        } else {
            s.memory_bytes[i] / GIB
        }
    };
    let mut max_usage = vec![f64::NAN; n];
    let mut mean_usage = vec![f64::NAN; n];
    for (b, (mx, mean)) in max_usage.iter_mut().zip(mean_usage.iter_mut()).enumerate() {
        let (mut m, mut sum, mut count) = (f64::NAN, 0.0, 0usize);
        for i in (b * per)..((b + 1) * per).min(trace.minutes) {
            for s in trace
                .series
                .iter()
                .filter(|s| s.container == container && s.present(i))
            {
                let v = value(i, s);
                m = if m.is_nan() { v } else { m.max(v) };
                sum += v;
                count += 1;
            }
        }
        *mx = m;
        *mean = if count > 0 { sum / count as f64 } else { f64::NAN };
    }
    let requests: Vec<(String, Vec<f64>)> = replays
        .iter()
        .map(|(name, r)| {
            let v = r.resources.get(container).map_or_else(Vec::new, |res| {
                (0..n)
                    .map(|b| {
                        res.iter()
                            .skip(b * per)
                            .take(per)
                            .map(|x| {
                                if cpu {
                                    x.cpu_request
                                } else {
                                    x.memory_request / GIB
                                }
                            })
                            .fold(f64::NAN, f64::max)
                    })
                    .collect()
            });
            (name.clone(), v)
        })
        .collect();
    let ymax = max_usage
        .iter()
        .chain(requests.iter().flat_map(|(_, v)| v.iter()))
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.05;
    let x = |b: usize| left + pw * b as f64 / n.max(1) as f64;
    let y = |v: f64| top + ph * (1.0 - v / ymax);
    let line = |values: &[f64]| {
        let mut d = String::new();
        let mut pen = false;
        for (b, v) in values.iter().enumerate() {
            if v.is_finite() {
                let _ = write!(d, "{}{:.1},{:.1} ", if pen { "L" } else { "M" }, x(b), y(*v));
                pen = true;
            } else {
                pen = false;
            }
        }
        d
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\
         <rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>"
    );
    let days = trace.minutes / 1440;
    for d in 0..=days {
        let px = left + pw * (d * 1440) as f64 / trace.minutes.max(1) as f64;
        let _ = write!(
            s,
            "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#eee\"/>\
             <text x=\"{px:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">d{d}</text>",
            top + ph,
            top + ph + 14.0
        );
    }
    for k in 0..=4 {
        let v = ymax * f64::from(k) / 4.0;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{v:.2}</text>",
            left - 4.0,
            y(v) + 3.0
        );
    }
    let _ = write!(
        s,
        "<path d=\"{}\" fill=\"none\" stroke=\"#ccc\" stroke-width=\"1\"/>\
         <path d=\"{}\" fill=\"none\" stroke=\"#555\" stroke-width=\"1\"/>",
        line(&mean_usage),
        line(&max_usage)
    );
    let mut legend = vec![
        ("usage (max over pods)".to_owned(), "#555"),
        ("usage (mean)".to_owned(), "#ccc"),
    ];
    for (k, (name, v)) in requests.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let _ = write!(
            s,
            "<path d=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>",
            line(v)
        );
        legend.push((format!("{name} request"), color));
        if !cpu && let Some((_, r)) = replays.get(k) {
            for (minute, c) in &r.oom_minutes {
                if c == container {
                    let px = left + pw * *minute as f64 / trace.minutes.max(1) as f64;
                    let _ = write!(
                        s,
                        "<circle cx=\"{px:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\"/>",
                        top + 4.0 + 5.0 * k as f64
                    );
                }
            }
        }
    }
    for (k, (label, color)) in legend.iter().enumerate() {
        let ly = top + 12.0 + 16.0 * k as f64;
        let lx = left + pw + 10.0;
        let _ = write!(
            s,
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
            lx + 18.0,
            lx + 22.0,
            ly + 4.0,
            escape(label)
        );
    }
    if !cpu {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\">dots at the top: OOM kills</text>",
            left + pw + 10.0,
            top + 12.0 + 16.0 * legend.len() as f64 + 4.0
        );
    }
    s.push_str("</svg>");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
