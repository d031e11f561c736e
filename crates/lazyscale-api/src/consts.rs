//! Well-known strings of the DatadogPodAutoscaler API: condition types and reasons, label and annotation
//! keys, value sources, action types, event reasons and the field manager name.
//!
//! They are plain `&str` constants so that they can be compared with what is read from the API server
//! (which may contain values this version does not know) and written into objects without conversion.
//! The values are wire-compatible with the Datadog Cluster Agent: an object written by one can be read by
//! the other.

/// Field manager name of the agent's own objects (webhook configuration, checkpoints). Each writer of
/// the DPA status has its own, in [`field_managers`].
pub const FIELD_MANAGER: &str = "lazyscale";

/// Field managers, one per writer, so that server-side apply keeps each writer's fields apart.
pub mod field_managers {
    /// The agent's own objects: the webhook configuration, vertical checkpoints.
    pub const AGENT: &str = super::FIELD_MANAGER;
    /// The horizontal writer: `status.currentReplicas`, `status.horizontal` and the conditions
    /// `Active`, `Error`, `Horizontal*`.
    pub const HORIZONTAL: &str = "lazyscale-horizontal";
    /// The vertical writer: `status.vertical` and the `Vertical*` conditions.
    pub const VERTICAL: &str = "lazyscale-vertical";
    /// The profile controller: the generated DPAs (metadata it sets and the whole spec), the built-in
    /// ClusterProfiles and the ClusterProfile status.
    pub const PROFILES: &str = "lazyscale-profiles";
}

/// `kind` of the DatadogPodAutoscaler.
pub const DPA_KIND: &str = "DatadogPodAutoscaler";

/// `kind` of a Namespace (a profile label on a namespace opts its workloads in).
pub const NAMESPACE_KIND: &str = "Namespace";

/// `kind` of the DatadogPodAutoscalerClusterProfile.
pub const CLUSTER_PROFILE_KIND: &str = "DatadogPodAutoscalerClusterProfile";

/// Name of the one MutatingWebhookConfiguration the agent registers (and deletes when the stack stops).
pub const WEBHOOK_CONFIGURATION: &str = "lazyscale-pod-autoscaling";

/// Name of the Secret (in the agent's namespace) holding the agent-managed webhook certificate: the CA
/// bundle and the serving certificate.
pub const WEBHOOK_CERT_SECRET: &str = "lazyscale-webhook-cert";

/// Name of the Lease (in the agent's lease namespace) the agent's replicas elect their leader with; the
/// leader-only writers check that their replica holds it.
pub const LEASE_NAME: &str = "lazyscale-controller";

/// Plural resource name of the DatadogPodAutoscaler.
pub const DPA_PLURAL: &str = "datadogpodautoscalers";

/// Plural resource name of the DatadogPodAutoscalerClusterProfile.
pub const CLUSTER_PROFILE_PLURAL: &str = "datadogpodautoscalerclusterprofiles";

/// API group of both custom resources.
pub const GROUP: &str = "datadoghq.com";

/// API version of both custom resources implemented here (the storage version of the official CRDs).
pub const VERSION: &str = "v1alpha2";

/// `apiVersion` value of both custom resources (`datadoghq.com/v1alpha2`).
pub const API_VERSION: &str = "datadoghq.com/v1alpha2";

/// Container name that makes a `constraints.containers[]` entry apply to every container without an entry
/// of its own.
pub const CONTAINER_WILDCARD: &str = "*";

/// Condition types, statuses and reasons.
pub mod conditions {
    /// Status value of a condition that holds.
    pub const STATUS_TRUE: &str = "True";
    /// Status value of a condition that does not hold.
    pub const STATUS_FALSE: &str = "False";
    /// Status value of a condition that could not be evaluated.
    pub const STATUS_UNKNOWN: &str = "Unknown";

    /// DPA condition: the autoscaler is in error (the message says why).
    pub const ERROR: &str = "Error";
    /// DPA condition: the autoscaler is active (it is within the per-cluster limit and its target exists).
    pub const ACTIVE: &str = "Active";
    /// DPA condition: a horizontal recommendation could be computed or received.
    pub const HORIZONTAL_ABLE_TO_RECOMMEND: &str = "HorizontalAbleToRecommend";
    /// DPA condition: the target could be scaled horizontally.
    pub const HORIZONTAL_ABLE_TO_SCALE: &str = "HorizontalAbleToScale";
    /// DPA condition: the last horizontal action was limited (constraints, rules or fallback direction).
    pub const HORIZONTAL_SCALING_LIMITED: &str = "HorizontalScalingLimited";
    /// DPA condition: a vertical recommendation could be computed or received.
    pub const VERTICAL_ABLE_TO_RECOMMEND: &str = "VerticalAbleToRecommend";
    /// DPA condition: the vertical recommendation could be applied (rollout or in-place resize).
    pub const VERTICAL_ABLE_TO_APPLY: &str = "VerticalAbleToApply";
    /// DPA condition: the vertical recommendation was changed by the container constraints.
    pub const VERTICAL_SCALING_LIMITED: &str = "VerticalScalingLimited";

    /// Every DPA condition type, in the order the Cluster Agent lists them.
    pub const DPA_CONDITION_TYPES: [&str; 8] = [
        ERROR,
        ACTIVE,
        HORIZONTAL_ABLE_TO_RECOMMEND,
        HORIZONTAL_ABLE_TO_SCALE,
        HORIZONTAL_SCALING_LIMITED,
        VERTICAL_ABLE_TO_RECOMMEND,
        VERTICAL_ABLE_TO_APPLY,
        VERTICAL_SCALING_LIMITED,
    ];

    /// ClusterProfile condition: the profile template is valid.
    pub const VALID: &str = "Valid";

    /// Condition reasons (the Cluster Agent's autoscaling error kinds).
    pub mod reasons {
        /// The `targetRef` cannot be used (bad API version, missing name, ...).
        pub const INVALID_TARGET_REF: &str = "InvalidTargetRef";
        /// The target exists but cannot be autoscaled (for example the agent's own Deployment).
        pub const INVALID_TARGET: &str = "InvalidTarget";
        /// The spec is invalid (min > max, duplicate container names, missing objective body, ...).
        pub const INVALID_SPEC: &str = "InvalidSpec";
        /// The autoscaler is disabled because the per-cluster number of autoscalers is reached.
        pub const CLUSTER_AUTOSCALER_LIMIT_REACHED: &str = "ClusterAutoscalerLimitReached";
        /// Recommendations could not be obtained.
        pub const RECOMMENDATION_ERROR: &str = "RecommendationError";
        /// The local (fallback) recommender failed.
        pub const LOCAL_RECOMMENDER_ERROR: &str = "LocalRecommenderError";
        /// The target object does not exist.
        pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
        /// The scale subresource call failed.
        pub const SCALE_FAILED: &str = "ScaleFailed";
        /// Scaling is disabled for the target (for example it has 0 replicas).
        pub const SCALING_DISABLED: &str = "ScalingDisabled";
        /// The apply policy forbids the action (Preview mode, or a `Disabled` strategy).
        pub const POLICY_RESTRICTED: &str = "PolicyRestricted";
        /// The fallback direction forbids the action of a local recommendation.
        pub const FALLBACK_RESTRICTED: &str = "FallbackRestricted";
        /// The target kind does not support the requested operation (rollouts of other kinds).
        pub const UNSUPPORTED_TARGET_KIND: &str = "UnsupportedTargetKind";
        /// A rollout could not be triggered.
        pub const ROLLOUT_FAILED: &str = "RolloutFailed";
        /// The action was limited by `minReplicas`/`maxReplicas` or container constraints.
        pub const LIMITED_BY_CONSTRAINT: &str = "LimitedByConstraint";
        /// The action was limited by the scale-up/scale-down rules.
        pub const LIMITED_BY_SCALING_BEHAVIOR: &str = "LimitedByScalingBehavior";
        /// The vertical recommendation cannot be applied to the pods: over what a node can give, or a
        /// resize the API server or the kubelet refused as infeasible.
        pub const RECOMMENDATION_INFEASIBLE: &str = "RecommendationInfeasible";
        /// The vertical recommendation is being applied (rollout or in-place resizes under way).
        pub const APPLYING: &str = "Applying";
        /// Every pod runs with the vertical recommendation.
        pub const APPLIED: &str = "Applied";
        /// Horizontal decisions are held while the agent's inputs re-sync: the pod cache relisting after
        /// a watch error or restart, or fewer pods of the target in it than the target's replicas.
        pub const INPUTS_SYNCING: &str = "InputsSyncing";

        /// Every reason above.
        pub const ALL: [&str; 19] = [
            INVALID_TARGET_REF,
            INVALID_TARGET,
            INVALID_SPEC,
            CLUSTER_AUTOSCALER_LIMIT_REACHED,
            RECOMMENDATION_ERROR,
            LOCAL_RECOMMENDER_ERROR,
            TARGET_NOT_FOUND,
            SCALE_FAILED,
            SCALING_DISABLED,
            POLICY_RESTRICTED,
            FALLBACK_RESTRICTED,
            UNSUPPORTED_TARGET_KIND,
            ROLLOUT_FAILED,
            LIMITED_BY_CONSTRAINT,
            LIMITED_BY_SCALING_BEHAVIOR,
            RECOMMENDATION_INFEASIBLE,
            APPLYING,
            APPLIED,
            INPUTS_SYNCING,
        ];
    }
}

/// Label keys and values.
pub mod labels {
    /// Label on a workload or a namespace naming the ClusterProfile to autoscale it with.
    pub const PROFILE: &str = "autoscaling.datadoghq.com/profile";
    /// Value of [`PROFILE`] that opts a workload out of its namespace's profile.
    pub const PROFILE_EXCLUDED: &str = "excluded";
    /// Label on objects created and reconciled by the autoscaler itself (built-in profiles).
    pub const MANAGED_BY: &str = "autoscaling.datadoghq.com/managed-by";
    /// Value of [`MANAGED_BY`] used by the Cluster Agent for its built-in profiles (kept for compatibility).
    pub const MANAGED_BY_DATADOG: &str = "datadog";
    /// The Kubernetes recommended label naming the tool that manages an object.
    pub const APP_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Value of [`APP_MANAGED_BY`] on the objects lazyscale creates (webhook configuration, checkpoints).
    pub const MANAGED_BY_LAZYSCALE: &str = "lazyscale";
}

/// Annotation keys.
pub mod annotations {
    /// Pod annotation: `<namespace>/<name>` of the DPA whose recommendation the webhook applied.
    pub const AUTOSCALER_ID: &str = "autoscaling.datadoghq.com/autoscaler-id";
    /// Pod and pod-template annotation: hash (version) of the vertical recommendation applied.
    pub const REC_ID: &str = "autoscaling.datadoghq.com/rec-id";
    /// Pod annotation: version of the runtime settings (GOMEMLIMIT) applied.
    pub const RUNTIME_REC_ID: &str = "autoscaling.datadoghq.com/runtime-rec-id";
    /// Pod-template annotation: RFC 3339 time of the rollout triggered to apply a vertical recommendation.
    pub const ROLLOUT_AT: &str = "autoscaling.datadoghq.com/rolloutAt";
    /// DPA annotation: hash of the ClusterProfile template the DPA was generated from.
    pub const PROFILE_HASH: &str = "autoscaling.datadoghq.com/profile-hash";
    /// Pod annotation set (`"true"`) once the `RecommendationApplied` event was emitted for the pod.
    pub const EVENT: &str = "autoscaling.datadoghq.com/event";
    /// DPA annotation: pause the autoscaler.
    pub const PAUSE: &str = "autoscaling.datadoghq.com/pause";
    /// DPA annotation: use the local (fallback) recommender even when main values are fresh.
    pub const FORCE_FALLBACK: &str = "autoscaling.datadoghq.com/force-fallback";
    /// DPA annotation: force a replica count.
    pub const FORCE_REPLICAS: &str = "autoscaling.datadoghq.com/force-replicas";
    /// DPA annotation: use a custom (external) recommender.
    pub const CUSTOM_RECOMMENDER: &str = "autoscaling.datadoghq.com/custom-recommender";
    /// Pod annotation of the cluster autoscaler; `"false"` means the pod must never be evicted (the
    /// vertical apply path resizes it in place or waits).
    pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
    /// Pod annotation of Karpenter; `"true"` means the pod must never be disrupted (never evicted by the
    /// vertical apply path).
    pub const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
    /// Annotation of `kubectl apply` (client-side): a copy of the whole object as last applied.
    pub const LAST_APPLIED_CONFIGURATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
}

/// Values of `status.horizontal.target.source`, `status.vertical.target.source` and
/// `status.horizontal.lastRecommendations[].source`.
pub mod value_sources {
    /// Values computed by the Datadog autoscaling product (received through Remote Config).
    pub const AUTOSCALING: &str = "Autoscaling";
    /// Values set manually in the Datadog app.
    pub const MANUAL: &str = "Manual";
    /// Values computed by the local fallback recommender.
    pub const LOCAL: &str = "Local";
    /// Values computed by an external recommender.
    pub const EXTERNAL: &str = "External";
}

/// Values of `status.vertical.lastAction.type`.
pub mod vertical_actions {
    /// A rollout of the target was triggered.
    pub const ROLLOUT_TRIGGERED: &str = "RolloutTriggered";
    /// In-place resizes of the target's pods were started.
    pub const RESIZE_TRIGGERED: &str = "ResizeTriggered";
    /// Every pod of the target runs with the recommended resources.
    pub const RESIZE_COMPLETED: &str = "ResizeCompleted";
}

/// Kubernetes event reasons emitted by the autoscaler.
pub mod events {
    /// Name of the component reporting events (Cluster Agent compatible).
    pub const REPORTER: &str = "datadog-workload-autoscaler";
    /// The target was scaled horizontally.
    pub const SUCCESSFUL_SCALE: &str = "SuccessfulScale";
    /// Horizontal scaling failed.
    pub const FAILED_SCALE: &str = "FailedScale";
    /// A rollout was triggered to apply a vertical recommendation.
    pub const SUCCESSFUL_TRIGGER_ROLLOUT: &str = "SuccessfulTriggerRollout";
    /// A rollout could not be triggered.
    pub const FAILED_TRIGGER_ROLLOUT: &str = "FailedTriggerRollout";
    /// An in-place resize succeeded.
    pub const RESIZE_SUCCESSFUL: &str = "ResizeSuccessful";
    /// A pod was evicted because it could not be resized in place.
    pub const IN_PLACE_EVICTED: &str = "InPlaceEvicted";
    /// A pod could not be evicted.
    pub const FAILED_TO_EVICT: &str = "FailedToEvict";
    /// An in-place resize was refused as infeasible (over what the node can give); not retried until
    /// the recommendation drops below it.
    pub const FAILED_RESIZE: &str = "FailedResize";
    /// The agent acts on a DPA again after it had stopped (the stop is a Warning event whose reason is
    /// the `Active=False` condition's, such as `InvalidSpec` or `TargetNotFound`).
    pub const AUTOSCALER_RESUMED: &str = "AutoscalerResumed";
    /// Pod event: the webhook applied a recommendation to the pod.
    pub const RECOMMENDATION_APPLIED: &str = "RecommendationApplied";
    /// Workload event: no DPA is generated from its profile because a DPA of the user targets it.
    pub const PROFILE_SKIPPED: &str = "ProfileSkipped";
    /// Workload or namespace event: the value of the profile label is not a valid profile name.
    pub const INVALID_PROFILE_LABEL: &str = "InvalidProfileLabel";
}

/// Names of the built-in ClusterProfiles.
pub mod profiles {
    /// Built-in profile favouring cost (CPU target 85 %, at least 1 replica).
    pub const OPTIMIZE_COST: &str = "datadog-optimize-cost";
    /// Built-in profile balancing cost and performance (CPU target 70 %, at least 2 replicas).
    pub const OPTIMIZE_BALANCE: &str = "datadog-optimize-balance";
    /// Built-in profile favouring performance (CPU target 60 %, at least 3 replicas).
    pub const OPTIMIZE_PERFORMANCE: &str = "datadog-optimize-performance";
}
