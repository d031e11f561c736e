//! Usage traces: per-pod, per-container CPU and memory usage on a 1-minute grid, the containers'
//! initial resources, and rollouts; read from and written to the documented CSV format (see the crate
//! README, "Trace format").
//!
//! A [`Trace`] is one workload. Every [`Series`] is one container of one pod; a pod that does not exist
//! at a minute (not yet created, scaled down) has `NaN` there. Minute `i` is `start + 60·i`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::str::FromStr;

use k8s_openapi::jiff::Timestamp;

/// Seconds per trace point.
pub const STEP_SECS: i64 = 60;

/// Bytes per GiB.
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Bytes per MiB.
pub const MIB: f64 = 1024.0 * 1024.0;

/// First line written by [`write_csv`] (optional when reading).
pub const CSV_MAGIC: &str = "# lazyscale-quality trace v1";

/// Errors reading a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Reading failed.
    #[error("reading the trace")]
    Io(#[from] std::io::Error),
    /// The header line lacks a required column.
    #[error("the header has no `{0}` column")]
    MissingColumn(&'static str),
    /// A line could not be parsed.
    #[error("line {line}: {what}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// The trace has no sample.
    #[error("the trace has no sample")]
    Empty,
    /// The trace is longer than the replay accepts.
    #[error("the trace spans {0} minutes, more than the {MAX_MINUTES} accepted")]
    TooLong(i64),
}

/// Longest trace accepted by [`read_csv`] (62 days).
pub const MAX_MINUTES: i64 = 62 * 24 * 60;

/// Initial resources of a container (what the user set before any autoscaler) and how its limits relate
/// to its requests.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// Container name.
    pub name: String,
    /// Initial CPU request, in cores.
    pub cpu_request_cores: f64,
    /// Initial memory request, in bytes.
    pub memory_request_bytes: f64,
    /// Memory limit / memory request; `None` = no memory limit.
    pub memory_limit_ratio: Option<f64>,
    /// CPU limit / CPU request; `None` = no CPU limit.
    pub cpu_limit_ratio: Option<f64>,
}

/// Usage of one container of one pod, one value per minute (`NaN` = the pod does not exist).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// CPU usage, in cores.
    pub cpu_cores: Vec<f64>,
    /// Memory usage (working set), in bytes.
    pub memory_bytes: Vec<f64>,
}

impl Series {
    /// True when the pod exists at minute `i`.
    pub fn present(&self, i: usize) -> bool {
        matches!((self.cpu_cores.get(i), self.memory_bytes.get(i)), (Some(c), Some(m)) if c.is_finite() && m.is_finite())
    }
}

/// One workload's usage over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Short name (file names, report keys).
    pub name: String,
    /// One sentence on what the trace models.
    pub description: String,
    /// Unix seconds of minute 0.
    pub start: i64,
    /// Number of minutes.
    pub minutes: usize,
    /// Containers of the workload's pods.
    pub containers: Vec<ContainerSpec>,
    /// Usage per pod and container.
    pub series: Vec<Series>,
    /// Minutes at which the workload is rolled out (every pod gets the current recommendation), sorted.
    pub rollouts: Vec<usize>,
}

impl Trace {
    /// Unix seconds of minute `i`.
    pub fn at(&self, i: usize) -> i64 {
        self.start + STEP_SECS * i64::try_from(i).unwrap_or(i64::MAX / STEP_SECS)
    }

    /// The spec of `container`.
    pub fn spec(&self, container: &str) -> Option<&ContainerSpec> {
        self.containers.iter().find(|c| c.name == container)
    }
}

/// Writes `trace` in the CSV format.
pub fn write_csv(trace: &Trace, mut w: impl Write) -> std::io::Result<()> {
    writeln!(w, "{CSV_MAGIC}")?;
    writeln!(w, "# name={}", trace.name)?;
    writeln!(w, "# description={}", trace.description.replace('\n', " "))?;
    for c in &trace.containers {
        let ratio = |r: Option<f64>| r.map_or_else(|| "none".to_owned(), |r| format!("{r}"));
        writeln!(
            w,
            "# container={} cpu_request_cores={} memory_request_bytes={} memory_limit_ratio={} cpu_limit_ratio={}",
            c.name,
            c.cpu_request_cores,
            c.memory_request_bytes.round(),
            ratio(c.memory_limit_ratio),
            ratio(c.cpu_limit_ratio)
        )?;
    }
    writeln!(w, "timestamp,pod,container,cpu_cores,memory_bytes,event")?;
    let mut line = String::new();
    for i in 0..trace.minutes {
        let mut rollout = trace.rollouts.binary_search(&i).is_ok();
        for s in &trace.series {
            if !s.present(i) {
                continue;
            }
            line.clear();
            let _ = write!(
                line,
                "{},{},{},{:.4},{:.0},{}",
                trace.at(i),
                s.pod,
                s.container,
                s.cpu_cores[i],
                s.memory_bytes[i],
                if rollout { "rollout" } else { "" }
            );
            rollout = false;
            writeln!(w, "{line}")?;
        }
    }
    Ok(())
}

/// Reads a trace in the CSV format. `name` is used when the file has no `# name=` line.
pub fn read_csv(r: impl BufRead, name: &str) -> Result<Trace, TraceError> {
    let mut meta_name = None;
    let mut description = String::new();
    let mut specs: Vec<ContainerSpec> = Vec::new();
    let mut columns: Option<Columns> = None;
    // (seconds, pod, container, cpu, memory, rollout)
    let mut rows: Vec<(i64, String, String, f64, f64, bool)> = Vec::new();
    for (n, line) in r.lines().enumerate() {
        let line = line?;
        let lineno = n + 1;
        let err = |what: String| TraceError::Parse { line: lineno, what };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            let comment = comment.trim();
            if let Some(v) = comment.strip_prefix("name=") {
                meta_name = Some(v.trim().to_owned());
            } else if let Some(v) = comment.strip_prefix("description=") {
                v.trim().clone_into(&mut description);
            } else if comment.starts_with("container=") {
                specs.push(parse_spec(comment).map_err(err)?);
            }
            continue;
        }
        let Some(cols) = &columns else {
            columns = Some(Columns::from_header(trimmed)?);
            continue;
        };
        let fields: Vec<&str> = trimmed.split(',').map(str::trim).collect();
        let get = |i: Option<usize>| i.and_then(|i| fields.get(i).copied()).unwrap_or("");
        let at = parse_time(get(Some(cols.timestamp))).map_err(err)?;
        let pod = match get(cols.pod) {
            "" => "pod-0".to_owned(),
            p => p.to_owned(),
        };
        let container = get(Some(cols.container)).to_owned();
        if container.is_empty() {
            return Err(err("empty container".into()));
        }
        let number = |s: &str, what: &str| -> Result<f64, TraceError> {
            if s.is_empty() {
                return Ok(f64::NAN);
            }
            match s.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
                _ => Err(TraceError::Parse {
                    line: lineno,
                    what: format!("{what} `{s}` is not a non-negative number"),
                }),
            }
        };
        let cpu = number(get(Some(cols.cpu)), "cpu_cores")?;
        let memory = number(get(Some(cols.memory)), "memory_bytes")?;
        let rollout = get(cols.event).eq_ignore_ascii_case("rollout");
        rows.push((at, pod, container, cpu, memory, rollout));
    }
    let first = rows.iter().map(|r| r.0).min().ok_or(TraceError::Empty)?;
    let last = rows.iter().map(|r| r.0).max().ok_or(TraceError::Empty)?;
    let start = first - first.rem_euclid(STEP_SECS);
    let span = (last - start) / STEP_SECS + 1;
    if span > MAX_MINUTES {
        return Err(TraceError::TooLong(span));
    }
    let minutes = usize::try_from(span).unwrap_or(0);
    let mut series: BTreeMap<(String, String), Series> = BTreeMap::new();
    let mut rollouts = Vec::new();
    for (at, pod, container, cpu, memory, rollout) in rows {
        let i = usize::try_from((at - start) / STEP_SECS).unwrap_or(0);
        let s = series
            .entry((pod.clone(), container.clone()))
            .or_insert_with(|| Series {
                pod,
                container,
                cpu_cores: vec![f64::NAN; minutes],
                memory_bytes: vec![f64::NAN; minutes],
            });
        if cpu.is_finite() {
            s.cpu_cores[i] = cpu;
        }
        if memory.is_finite() {
            s.memory_bytes[i] = memory;
        }
        if rollout {
            rollouts.push(i);
        }
    }
    let mut series: Vec<Series> = series.into_values().collect();
    // A missing value of one resource while the other is present: carry the previous value forward
    // (a minute with neither stays absent).
    for s in &mut series {
        let present: Vec<bool> = s
            .cpu_cores
            .iter()
            .zip(&s.memory_bytes)
            .map(|(c, m)| c.is_finite() || m.is_finite())
            .collect();
        for v in [&mut s.cpu_cores, &mut s.memory_bytes] {
            let mut last = f64::NAN;
            for (x, p) in v.iter_mut().zip(&present) {
                if x.is_finite() {
                    last = *x;
                } else if *p {
                    *x = last;
                }
            }
        }
        for (c, m) in s.cpu_cores.iter_mut().zip(s.memory_bytes.iter_mut()) {
            if !(c.is_finite() && m.is_finite()) {
                *c = f64::NAN;
                *m = f64::NAN;
            }
        }
    }
    rollouts.sort_unstable();
    rollouts.dedup();
    for s in &series {
        if !specs.iter().any(|c| c.name == s.container) {
            specs.push(default_spec(&series, &s.container));
        }
    }
    Ok(Trace {
        name: meta_name.unwrap_or_else(|| name.to_owned()),
        description,
        start,
        minutes,
        containers: specs,
        series,
        rollouts,
    })
}

/// The spec of a container without a `# container=` line: requests at 1.2 × the largest usage of the
/// first day (what a careful user would set after watching a day), memory limit 1.5 × the request, no
/// CPU limit.
fn default_spec(series: &[Series], container: &str) -> ContainerSpec {
    let day = 24 * 60;
    let max = |f: fn(&Series) -> &Vec<f64>| {
        series
            .iter()
            .filter(|s| s.container == container)
            .flat_map(|s| f(s).iter().take(day).copied())
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max)
    };
    ContainerSpec {
        name: container.to_owned(),
        cpu_request_cores: (max(|s| &s.cpu_cores) * 1.2).max(0.01),
        memory_request_bytes: (max(|s| &s.memory_bytes) * 1.2).max(16.0 * MIB),
        memory_limit_ratio: Some(1.5),
        cpu_limit_ratio: None,
    }
}

struct Columns {
    timestamp: usize,
    pod: Option<usize>,
    container: usize,
    cpu: usize,
    memory: usize,
    event: Option<usize>,
}

impl Columns {
    fn from_header(line: &str) -> Result<Self, TraceError> {
        let names: Vec<String> = line.split(',').map(|s| s.trim().to_ascii_lowercase()).collect();
        let find = |n: &str| names.iter().position(|c| c == n);
        Ok(Self {
            timestamp: find("timestamp").ok_or(TraceError::MissingColumn("timestamp"))?,
            pod: find("pod"),
            container: find("container").ok_or(TraceError::MissingColumn("container"))?,
            cpu: find("cpu_cores").ok_or(TraceError::MissingColumn("cpu_cores"))?,
            memory: find("memory_bytes").ok_or(TraceError::MissingColumn("memory_bytes"))?,
            event: find("event"),
        })
    }
}

fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(v) = s.parse::<i64>() {
        return Ok(v);
    }
    if let Ok(v) = s.parse::<f64>()
        && v.is_finite()
    {
        return Ok(v.floor() as i64);
    }
    Timestamp::from_str(s)
        .map(|t| t.as_second())
        .map_err(|e| format!("timestamp `{s}`: {e}"))
}

fn parse_spec(comment: &str) -> Result<ContainerSpec, String> {
    let mut spec = ContainerSpec {
        name: String::new(),
        cpu_request_cores: f64::NAN,
        memory_request_bytes: f64::NAN,
        memory_limit_ratio: Some(1.5),
        cpu_limit_ratio: None,
    };
    for kv in comment.split_whitespace() {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("`{kv}` is not key=value"))?;
        let num = || -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| format!("{k}: `{v}` is not a positive number"))
        };
        let ratio =
            || -> Result<Option<f64>, String> { if v == "none" { Ok(None) } else { num().map(Some) } };
        match k {
            "container" => v.clone_into(&mut spec.name),
            "cpu_request_cores" => spec.cpu_request_cores = num()?,
            "memory_request_bytes" => spec.memory_request_bytes = num()?,
            "memory_limit_ratio" => spec.memory_limit_ratio = ratio()?,
            "cpu_limit_ratio" => spec.cpu_limit_ratio = ratio()?,
            other => return Err(format!("unknown container key `{other}`")),
        }
    }
    if spec.name.is_empty() || !spec.cpu_request_cores.is_finite() || !spec.memory_request_bytes.is_finite() {
        return Err("a container line needs container=, cpu_request_cores= and memory_request_bytes=".into());
    }
    Ok(spec)
}
