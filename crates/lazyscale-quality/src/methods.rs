//! The recommenders under test, behind the harness's [`Method`] trait:
//!
//! - [`Lazyscale`]: the real `lazyscale-vertical` [`Recommender`] with a given [`Config`], behind the
//!   agent's update gate ([`lazyscale_vertical::apply::gate`], per container here, per workload in the
//!   agent) or without it; limits scaled with the requests, as lazyscale's webhook does by default
//!   (`controlledValues: RequestsAndLimits`);
//! - [`VpaMethod`]: the VPA's algorithm ([`crate::vpa`]), limits scaled with the requests;
//! - [`DpaPublished`]: the DPA's published method ([`crate::dpa`]), which sets the limits itself.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use lazyscale_vertical::apply::{CurrentResources, UpdateGate, gate};
use lazyscale_vertical::{Config, Recommender, WorkloadKey};

use crate::dpa::DpaMethod;
use crate::replay::{Method, Resources};
use crate::trace::ContainerSpec;
use crate::vpa::Vpa;

fn timestamp(at: i64) -> Timestamp {
    Timestamp::from_second(at).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// lazyscale's vertical recommender.
#[derive(Debug, Clone)]
pub struct Lazyscale {
    name: String,
    recommender: Recommender,
    key: WorkloadKey,
    gate: Option<UpdateGate>,
    /// Per container: the resources the gate let through last, and when.
    in_force: BTreeMap<String, (Resources, i64)>,
}

impl Lazyscale {
    /// The recommender with `config` behind the agent's default update gate, reported as `name`.
    pub fn new(name: &str, config: Config) -> Result<Self, lazyscale_vertical::ConfigError> {
        Self::with_gate(name, config, Some(UpdateGate::default()))
    }

    /// The recommender with `config` behind `gate` (`None`: every new recommendation goes to the
    /// harness's update policy as it is), reported as `name`.
    pub fn with_gate(
        name: &str,
        config: Config,
        gate: Option<UpdateGate>,
    ) -> Result<Self, lazyscale_vertical::ConfigError> {
        Ok(Self {
            name: name.to_owned(),
            recommender: Recommender::new(config)?,
            key: WorkloadKey::new("replay", "Deployment", "trace"),
            gate,
            in_force: BTreeMap::new(),
        })
    }
}

/// The gate's view of a container's resources (millicores and bytes).
fn gate_view(name: &str, r: &Resources) -> [(String, CurrentResources); 1] {
    let milli = |v: f64| (v * 1000.0).round().max(0.0) as u64;
    let bytes = |v: f64| v.round().max(0.0) as u64;
    [(
        name.to_owned(),
        CurrentResources {
            requests: lazyscale_vertical::Resources {
                cpu_millicores: Some(milli(r.cpu_request)),
                memory_bytes: Some(bytes(r.memory_request)),
            },
            limits: lazyscale_vertical::Resources {
                cpu_millicores: r.cpu_limit.map(milli),
                memory_bytes: r.memory_limit.map(bytes),
            },
        },
    )]
}

impl Method for Lazyscale {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn observe(&mut self, at: i64, _pod: &str, container: &str, cpu_cores: f64, memory_bytes: f64) {
        let t = timestamp(at);
        self.recommender
            .add_cpu_sample(&self.key, container, cpu_cores * 1000.0, t);
        self.recommender
            .add_memory_sample(&self.key, container, memory_bytes.max(0.0) as u64, t);
    }

    fn record_oom(&mut self, at: i64, _pod: &str, container: &str, memory_bytes: f64, _current: &Resources) {
        self.recommender.record_oom(
            &self.key,
            container,
            memory_bytes.max(0.0) as u64,
            timestamp(at),
            None,
        );
    }

    fn recommend(&mut self, at: i64, spec: &ContainerSpec, _containers_per_pod: usize) -> Option<Resources> {
        let rec = self.recommender.recommend(&self.key)?;
        let c = rec.containers.into_iter().find(|c| c.name == spec.name)?;
        let cpu = c.cpu_millicores?.target as f64 / 1000.0;
        let memory = c.memory_bytes?.target as f64;
        let new = Resources::proportional(spec, cpu, memory);
        let Some(g) = &self.gate else {
            return Some(new);
        };
        if let Some((old, since)) = self.in_force.get(&spec.name) {
            let age = Duration::from_secs(u64::try_from(at - since).unwrap_or(0));
            let d = gate(
                &gate_view(&spec.name, old),
                &gate_view(&spec.name, &new),
                Some(age),
                g,
            );
            if !d.applies() {
                return Some(*old);
            }
        }
        self.in_force.insert(spec.name.clone(), (new, at));
        Some(new)
    }
}

/// The VPA recommender with its defaults.
#[derive(Debug, Clone, Default)]
pub struct VpaMethod {
    vpa: Vpa,
}

impl VpaMethod {
    /// An empty VPA.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Method for VpaMethod {
    fn name(&self) -> String {
        "vpa".into()
    }

    fn observe(&mut self, at: i64, pod: &str, container: &str, cpu_cores: f64, memory_bytes: f64) {
        self.vpa.add_cpu(pod, container, cpu_cores, at);
        self.vpa.add_memory(pod, container, memory_bytes, at);
    }

    fn record_oom(&mut self, at: i64, pod: &str, container: &str, _memory_bytes: f64, current: &Resources) {
        self.vpa.record_oom(pod, container, current.memory_request, at);
    }

    fn recommend(&mut self, _at: i64, spec: &ContainerSpec, containers_per_pod: usize) -> Option<Resources> {
        let r = self.vpa.recommend(&spec.name, containers_per_pod)?;
        Some(Resources::proportional(spec, r.cpu.target, r.memory.target))
    }
}

/// The DPA's published vertical method.
#[derive(Debug, Clone, Default)]
pub struct DpaPublished {
    dpa: DpaMethod,
}

impl DpaPublished {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Method for DpaPublished {
    fn name(&self) -> String {
        "dpa_method".into()
    }

    fn observe(&mut self, at: i64, _pod: &str, container: &str, cpu_cores: f64, memory_bytes: f64) {
        self.dpa.add(container, cpu_cores, memory_bytes, at);
    }

    fn record_oom(
        &mut self,
        _at: i64,
        _pod: &str,
        container: &str,
        _memory_bytes: f64,
        _current: &Resources,
    ) {
        self.dpa.record_oom(container);
    }

    fn recommend(&mut self, _at: i64, spec: &ContainerSpec, _containers_per_pod: usize) -> Option<Resources> {
        // Guaranteed: the trace's container has its limits equal to its requests.
        let guaranteed = spec.memory_limit_ratio == Some(1.0) && spec.cpu_limit_ratio == Some(1.0);
        let r = self
            .dpa
            .recommend(&spec.name, guaranteed, spec.cpu_limit_ratio.is_some())?;
        Some(Resources {
            cpu_request: r.cpu_request,
            cpu_limit: r.cpu_limit,
            memory_request: r.memory_request,
            memory_limit: Some(r.memory_limit),
        })
    }
}
