//! Horizontal quality on the real control plane: the same load through lazyscale's horizontal
//! autoscaling (the agent binary, a `DatadogPodAutoscaler`) and through the real HPA
//! (kube-controller-manager's horizontal-pod-autoscaler controller, an `autoscaling/v2`
//! `HorizontalPodAutoscaler`), on identical Deployments in two namespaces of one run.
//!
//! The simulator (`lazyscale-sim`) writes the `metrics.k8s.io` PodMetrics both autoscalers read; a
//! workload's CPU demand is a profile of time shared evenly by its ready replicas, so scaling out lowers
//! each pod's usage. Both autoscalers get the same objective (CPU utilization of the requests), the same
//! replica bounds, the same scale-down stabilization window (compressed time: 30 s instead of the
//! HPA's 5 minutes) and the same period (the HPA's default sync period of 15 s: the agent runs with
//! `--horizontal-period-seconds=15`); the DPA allows its local recommendations both directions
//! (`fallback.horizontal.direction: All`; the DPA default `ScaleUp` never scales down with
//! `owner: Local`); everything else is each one's default.
//!
//! Every second the harness samples each Deployment (`status.replicas`, `status.readyReplicas`) and the
//! profile's demand at that moment, and scores ([`score`], pure): **replica-minutes** (pods that
//! exist, integrated over time) and **minutes above target + 10** (the demand over the ready pods'
//! requests above the objective plus 10 percentage points, e.g. above 70 % for a 60 % objective; no
//! ready pod counts as above). The profiles are compressed in time (a few minutes per run).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use lazyscale_sim::load::{CpuProfile, LoadProfile, MemoryProfile, Step};
use lazyscale_sim::units::{Bytes, Cpu, Dur};
use lazyscale_sim::{SimConfig, Simulator, WorkloadRef};
use lazyscale_testenv::{Agent, AgentOptions, Server, ServerOptions};
use serde::Serialize;
use serde_json::json;

/// Field manager of the objects the harness writes.
const MANAGER: &str = "lazyscale-quality";

/// Errors of a horizontal run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The control plane could not start or be reached.
    #[error("control plane: {0}")]
    TestEnv(#[from] lazyscale_testenv::Error),
    /// A Kubernetes request failed.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// The simulator failed.
    #[error("simulator: {0}")]
    Sim(String),
    /// The agent could not start.
    #[error("agent: {0}")]
    Agent(String),
    /// An object could not be built.
    #[error("object: {0}")]
    Json(#[from] serde_json::Error),
}

/// A load shape of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Low, a step to 5× for half the run, low again.
    Step,
    /// A compressed day: a cosine from the trough to the peak and back.
    Diurnal,
}

impl Scenario {
    /// Both scenarios.
    pub const ALL: [Scenario; 2] = [Scenario::Step, Scenario::Diurnal];

    /// Name in the report (and of the Deployments' namespaces).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Step => "step",
            Scenario::Diurnal => "diurnal",
        }
    }

    /// The CPU demand (cores) over `seconds` from the simulator's start, peaking at `peak` cores.
    pub fn profile(self, seconds: f64, peak: f64) -> CpuProfile {
        let low = peak / 5.0;
        match self {
            Scenario::Step => CpuProfile::Step {
                steps: vec![
                    Step {
                        at: Dur(Duration::ZERO),
                        value: Cpu(low),
                    },
                    Step {
                        at: Dur(Duration::from_secs_f64(seconds * 0.2)),
                        value: Cpu(peak),
                    },
                    Step {
                        at: Dur(Duration::from_secs_f64(seconds * 0.6)),
                        value: Cpu(low),
                    },
                ],
            },
            Scenario::Diurnal => CpuProfile::Diurnal {
                min: Cpu(low),
                max: Cpu(peak),
                day: Dur(Duration::from_secs_f64(seconds.max(1.0))),
                peak_hour: 12.0,
            },
        }
    }
}

/// What a run compares.
#[derive(Debug, Clone)]
pub struct HorizontalOptions {
    /// The agent binary.
    pub agent: PathBuf,
    /// Length of each scenario's profile (they run at the same time, in their own namespaces).
    pub seconds: f64,
    /// The scenarios.
    pub scenarios: Vec<Scenario>,
    /// CPU request of each pod, in cores.
    pub request_cores: f64,
    /// Peak demand of the profiles, in cores.
    pub peak_cores: f64,
    /// CPU utilization objective, percent.
    pub target_percent: u32,
    /// Replica bounds.
    pub min_replicas: i32,
    /// Replica bounds.
    pub max_replicas: i32,
    /// Period of both autoscalers (the HPA's is kube-controller-manager's default, 15 s).
    pub period_seconds: u64,
    /// Scale-down stabilization window of both.
    pub scale_down_window_seconds: i32,
    /// Where the agent's log goes (inherited when `None`).
    pub agent_log: Option<PathBuf>,
}

impl HorizontalOptions {
    /// The defaults of `cargo xtask bench quality --horizontal`: 4-minute profiles peaking at 3 cores,
    /// pods requesting 0.5 core, a 60 % objective (10 replicas at the peak), 1–12 replicas.
    pub fn new(agent: impl Into<PathBuf>) -> Self {
        Self {
            agent: agent.into(),
            seconds: 240.0,
            scenarios: Scenario::ALL.to_vec(),
            request_cores: 0.5,
            peak_cores: 3.0,
            target_percent: 60,
            min_replicas: 1,
            max_replicas: 12,
            period_seconds: 15,
            scale_down_window_seconds: 30,
            agent_log: None,
        }
    }
}

/// One observation of one Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the profiles started.
    pub t: f64,
    /// The profile's demand, cores.
    pub demand: f64,
    /// Pods that exist (`status.replicas`).
    pub replicas: i32,
    /// Ready pods.
    pub ready: i32,
}

/// The scores of one autoscaler on one scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HorizontalScore {
    /// Pods that exist, integrated over the run, in minutes.
    pub replica_minutes: f64,
    /// Minutes in which the demand over the ready pods' requests was above the objective + 10 points.
    pub minutes_above_target: f64,
    /// Largest number of pods.
    pub max_replicas: i32,
    /// Seconds from the start until the first scale-up, if any.
    pub first_scale_up_seconds: Option<f64>,
    /// Seconds of the run scored.
    pub seconds: f64,
}

/// Scores `samples` (in time order): each sample holds until the next one.
pub fn score(samples: &[Sample], request_cores: f64, target_percent: u32) -> HorizontalScore {
    let mut s = HorizontalScore::default();
    let limit = (f64::from(target_percent) + 10.0) / 100.0;
    let initial = samples.first().map_or(0, |x| x.replicas);
    for (i, x) in samples.iter().enumerate() {
        s.max_replicas = s.max_replicas.max(x.replicas);
        if s.first_scale_up_seconds.is_none() && x.replicas > initial {
            s.first_scale_up_seconds = Some(x.t);
        }
        let Some(next) = samples.get(i + 1) else {
            continue;
        };
        let dt = (next.t - x.t).max(0.0);
        s.seconds += dt;
        s.replica_minutes += f64::from(x.replicas.max(0)) * dt / 60.0;
        let capacity = f64::from(x.ready.max(0)) * request_cores;
        let above = if capacity > 0.0 {
            x.demand / capacity > limit
        } else {
            x.demand > 0.0
        };
        if above {
            s.minutes_above_target += dt / 60.0;
        }
    }
    s
}

/// The report of one scenario: both autoscalers' scores and samples.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub scenario: Scenario,
    /// lazyscale's scores.
    pub lazyscale: HorizontalScore,
    /// The HPA's scores.
    pub hpa: HorizontalScore,
    /// lazyscale's replica-minutes / the HPA's.
    pub replica_minutes_ratio: f64,
    /// lazyscale's minutes above target + 10 − the HPA's.
    pub minutes_above_target_delta: f64,
    /// Every sample: `[t, demand, lazyscale replicas, lazyscale ready, hpa replicas, hpa ready]`.
    pub samples: Vec<[f64; 6]>,
}

/// The whole comparison, for the report's `horizontal` key.
#[derive(Debug, Clone, Serialize)]
pub struct HorizontalReport {
    /// Settings of the run.
    pub settings: serde_json::Value,
    /// One entry per scenario.
    pub scenarios: Vec<ScenarioReport>,
}

fn namespace(scenario: Scenario, who: &str) -> String {
    format!("{who}-{}", scenario.name())
}

const DEPLOYMENT: &str = "web";

fn start_agent(server: &Server, o: &HorizontalOptions) -> Result<Agent, Error> {
    let mut opts = AgentOptions::new(&o.agent, server.agent_kubeconfig_path()).args([
        format!("--horizontal-period-seconds={}", o.period_seconds),
        "--lease-namespace=default".to_owned(),
    ]);
    opts.ready_timeout = Duration::from_secs(60);
    if let Some(log) = &o.agent_log {
        opts = opts.log_to(log);
    }
    Ok(Agent::start(opts)?)
}

async fn create_workload(
    client: &kube::Client,
    ns: &str,
    o: &HorizontalOptions,
    lazyscale: bool,
) -> Result<(), Error> {
    let namespaces = Api::<Namespace>::all(client.clone());
    let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    namespaces
        .patch(ns, &PatchParams::apply(MANAGER), &Patch::Apply(&n))
        .await?;
    // Pods need the namespace's default ServiceAccount (created by kube-controller-manager).
    let sa = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns);
    let started = Instant::now();
    while sa.get_opt("default").await?.is_none() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let request = format!("{}m", (o.request_cores * 1000.0).round());
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": DEPLOYMENT},
        "spec": {"replicas": o.min_replicas, "selector": {"matchLabels": {"app": DEPLOYMENT}},
            "template": {"metadata": {"labels": {"app": DEPLOYMENT}},
                "spec": {"containers": [{"name": "app", "image": "app",
                    "resources": {"requests": {"cpu": request, "memory": "64Mi"}}}]}}}}))?;
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await?;
    if lazyscale {
        let dpa: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "datadoghq.com/v1alpha2", "kind": "DatadogPodAutoscaler",
            "metadata": {"name": DEPLOYMENT},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT},
                "owner": "Local",
                "applyPolicy": {"scaleDown": {"stabilizationWindowSeconds": o.scale_down_window_seconds}},
                // Local recommendations are the fallback of the DPA model, which scales up only by
                // default; the HPA scales both ways.
                "fallback": {"horizontal": {"direction": "All"}},
                "constraints": {"minReplicas": o.min_replicas, "maxReplicas": o.max_replicas},
                "objectives": [{"type": "PodResource", "podResource": {"name": "cpu",
                    "value": {"type": "Utilization", "utilization": o.target_percent}}}]}}))?;
        Api::<DynamicObject>::namespaced_with(
            client.clone(),
            ns,
            &lazyscale_testenv::fixtures::dpa_resource(),
        )
        .patch(DEPLOYMENT, &PatchParams::apply(MANAGER), &Patch::Apply(&dpa))
        .await?;
    } else {
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": DEPLOYMENT},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT},
                "minReplicas": o.min_replicas, "maxReplicas": o.max_replicas,
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": o.scale_down_window_seconds}},
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": o.target_percent}}}]}}))?;
        Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &hpa)
            .await?;
    }
    Ok(())
}

async fn observe(client: &kube::Client, ns: &str) -> Result<(i32, i32), Error> {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(DEPLOYMENT)
        .await?;
    let status = d.status.unwrap_or_default();
    Ok((status.replicas.unwrap_or(0), status.ready_replicas.unwrap_or(0)))
}

/// Runs the comparison on a fresh control plane.
pub async fn run(o: &HorizontalOptions, progress: &dyn Fn(&str)) -> Result<HorizontalReport, Error> {
    progress("starting the control plane");
    let server = Server::start(ServerOptions::default())?;
    let report = run_on(&server, o, progress).await;
    drop(server);
    report
}

/// Runs the comparison on `server` (which must run kube-controller-manager with its HPA controller).
pub async fn run_on(
    server: &Server,
    o: &HorizontalOptions,
    progress: &dyn Fn(&str),
) -> Result<HorizontalReport, Error> {
    let client = server.client().await?;
    lazyscale_testenv::install_crds(&client).await?;
    let mut namespaces = Vec::new();
    for s in &o.scenarios {
        for who in ["lazyscale", "hpa"] {
            namespaces.push(namespace(*s, who));
        }
    }
    progress("starting the simulator and the agent");
    let _agent = start_agent(server, o)?;
    let sim = Simulator::start(
        client.clone(),
        SimConfig {
            namespaces: namespaces.clone(),
            metrics_interval: Duration::from_secs(1),
            resync: Duration::from_secs(2),
            ..SimConfig::default()
        },
    )
    .await
    .map_err(|e| Error::Sim(e.to_string()))?;
    let result = drive(&client, &sim, o, progress).await;
    sim.shutdown().await;
    result
}

async fn drive(
    client: &kube::Client,
    sim: &Simulator,
    o: &HorizontalOptions,
    progress: &dyn Fn(&str),
) -> Result<HorizontalReport, Error> {
    // The profiles' time is the simulator's: they start at the moment the loads are set, shifted by
    // the simulator's elapsed time then.
    let mut samples: Vec<Vec<[f64; 6]>> = vec![Vec::new(); o.scenarios.len()];
    for s in &o.scenarios {
        for (who, lazyscale) in [("lazyscale", true), ("hpa", false)] {
            create_workload(client, &namespace(*s, who), o, lazyscale).await?;
        }
    }
    let offset = sim.elapsed();
    let profiles: Vec<CpuProfile> = o
        .scenarios
        .iter()
        .map(|s| shift(s.profile(o.seconds, o.peak_cores), offset))
        .collect();
    for (s, cpu) in o.scenarios.iter().zip(&profiles) {
        for who in ["lazyscale", "hpa"] {
            sim.set_load(
                &WorkloadRef::deployment(&namespace(*s, who), DEPLOYMENT),
                LoadProfile {
                    cpu: cpu.clone(),
                    memory: MemoryProfile {
                        base: Bytes(32.0 * 1024.0 * 1024.0),
                        per_cpu: Bytes(0.0),
                        leak: Bytes(0.0),
                    },
                    noise: 0.0,
                },
            );
        }
    }
    progress(&format!(
        "running {} scenario(s) for {:.0} s",
        o.scenarios.len(),
        o.seconds
    ));
    let start = Instant::now();
    let mut next_progress = 30.0;
    while start.elapsed().as_secs_f64() <= o.seconds {
        let t = start.elapsed().as_secs_f64();
        for (i, s) in o.scenarios.iter().enumerate() {
            let demand = profiles
                .get(i)
                .map_or(0.0, |p| p.total_cores(sim.elapsed(), sim.config().seed));
            let (lr, lready) = observe(client, &namespace(*s, "lazyscale")).await?;
            let (hr, hready) = observe(client, &namespace(*s, "hpa")).await?;
            if let Some(v) = samples.get_mut(i) {
                v.push([
                    t,
                    demand,
                    f64::from(lr),
                    f64::from(lready),
                    f64::from(hr),
                    f64::from(hready),
                ]);
            }
        }
        if t >= next_progress {
            progress(&format!("{t:.0} s"));
            next_progress += 30.0;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let scenarios = o
        .scenarios
        .iter()
        .zip(samples)
        .map(|(s, rows)| {
            let pick = |r: usize, ready: usize| -> Vec<Sample> {
                rows.iter()
                    .map(|x| Sample {
                        t: x[0],
                        demand: x[1],
                        replicas: x[r] as i32,
                        ready: x[ready] as i32,
                    })
                    .collect()
            };
            let lazyscale = score(&pick(2, 3), o.request_cores, o.target_percent);
            let hpa = score(&pick(4, 5), o.request_cores, o.target_percent);
            ScenarioReport {
                scenario: *s,
                replica_minutes_ratio: round4(lazyscale.replica_minutes / hpa.replica_minutes.max(1e-9)),
                minutes_above_target_delta: round4(lazyscale.minutes_above_target - hpa.minutes_above_target),
                lazyscale,
                hpa,
                samples: rows,
            }
        })
        .collect();
    Ok(HorizontalReport {
        settings: json!({
            "seconds": o.seconds,
            "request_cores": o.request_cores,
            "peak_cores": o.peak_cores,
            "target_percent": o.target_percent,
            "above_target_percent": o.target_percent + 10,
            "min_replicas": o.min_replicas,
            "max_replicas": o.max_replicas,
            "period_seconds": o.period_seconds,
            "scale_down_stabilization_seconds": o.scale_down_window_seconds,
        }),
        scenarios,
    })
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// `profile` started `offset` seconds later.
fn shift(profile: CpuProfile, offset: f64) -> CpuProfile {
    match profile {
        CpuProfile::Step { steps } => CpuProfile::Step {
            steps: steps
                .into_iter()
                .map(|s| Step {
                    at: Dur(s.at.0 + Duration::from_secs_f64(offset.max(0.0))),
                    value: s.value,
                })
                .collect(),
        },
        CpuProfile::Diurnal {
            min,
            max,
            day,
            peak_hour,
        } => {
            // Move the peak later by `offset`.
            let hours = offset / day.0.as_secs_f64().max(1e-9) * 24.0;
            CpuProfile::Diurnal {
                min,
                max,
                day,
                peak_hour: (peak_hour + hours).rem_euclid(24.0),
            }
        }
        other => other,
    }
}

/// Where `cargo build` puts the agent binary of the workspace whose target folder is `target`.
pub fn agent_binary(target: &Path, release: bool) -> PathBuf {
    target
        .join(if release { "release" } else { "debug" })
        .join("lazyscale")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rows: &[(f64, f64, i32, i32)]) -> Vec<Sample> {
        rows.iter()
            .map(|&(t, demand, replicas, ready)| Sample {
                t,
                demand,
                replicas,
                ready,
            })
            .collect()
    }

    #[test]
    fn replica_minutes_and_minutes_above_target() {
        // 60 s at 1 pod with 0.5 core of demand on 0.5 core requested (100 %, above 70 %), then 60 s
        // at 2 pods (50 %), then the end.
        let s = score(
            &samples(&[(0.0, 0.5, 1, 1), (60.0, 0.5, 2, 2), (120.0, 0.5, 2, 2)]),
            0.5,
            60,
        );
        assert!((s.replica_minutes - 3.0).abs() < 1e-9, "{s:?}");
        assert!((s.minutes_above_target - 1.0).abs() < 1e-9, "{s:?}");
        assert_eq!(s.max_replicas, 2);
        assert_eq!(s.first_scale_up_seconds, Some(60.0));
        assert!((s.seconds - 120.0).abs() < 1e-9);
    }

    #[test]
    fn no_ready_pod_is_above_target_and_70_percent_is_not() {
        let s = score(
            &samples(&[(0.0, 0.1, 1, 0), (30.0, 0.7, 2, 2), (60.0, 0.7, 2, 2)]),
            0.5,
            60,
        );
        assert!((s.minutes_above_target - 0.5).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn shifted_profiles_start_at_the_offset() {
        let p = shift(Scenario::Step.profile(100.0, 3.0), 7.0);
        assert!((p.total_cores(7.0 + 19.0, 1) - 0.6).abs() < 1e-9);
        assert!((p.total_cores(7.0 + 21.0, 1) - 3.0).abs() < 1e-9);
        let d = shift(Scenario::Diurnal.profile(100.0, 3.0), 30.0);
        assert!(
            (d.total_cores(30.0 + 50.0, 1) - 3.0).abs() < 1e-6,
            "{}",
            d.total_cores(80.0, 1)
        );
        assert!((d.total_cores(30.0, 1) - 0.6).abs() < 1e-6);
    }

    proptest::proptest! {
        /// Replica-minutes are the pods integrated over time; the minutes above target never exceed
        /// the run.
        #[test]
        fn scores_are_integrals(rows in proptest::collection::vec((0.1f64..30.0, 0.0f64..8.0, 0i32..20, 0i32..20), 1..50)) {
            let mut t = 0.0;
            let mut v = Vec::new();
            for (dt, demand, replicas, ready) in rows {
                v.push(Sample { t, demand, replicas, ready: ready.min(replicas) });
                t += dt;
            }
            let s = score(&v, 0.5, 60);
            let expected: f64 = v.windows(2).map(|w| f64::from(w[0].replicas) * (w[1].t - w[0].t) / 60.0).sum();
            proptest::prop_assert!((s.replica_minutes - expected).abs() < 1e-6);
            proptest::prop_assert!(s.minutes_above_target <= s.seconds / 60.0 + 1e-9);
            proptest::prop_assert!(s.max_replicas == v.iter().map(|x| x.replicas).max().unwrap_or(0));
        }
    }
}
