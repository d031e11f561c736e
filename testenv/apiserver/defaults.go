package main

// A subset of the defaulting that kube-apiserver applies (k8s.io/kubernetes/pkg/apis/*/v1/defaults.go,
// which Debian does not package). Registered on the Scheme, so the codec applies it on decode.

import (
	admv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func ptr[T any](v T) *T { return &v }

func defaultWebhook(ns, os **metav1.LabelSelector, mp **admv1.MatchPolicyType, fp **admv1.FailurePolicyType, ts **int32,
	rules []admv1.RuleWithOperations, cc *admv1.WebhookClientConfig) {
	if *ns == nil {
		*ns = &metav1.LabelSelector{}
	}
	if *os == nil {
		*os = &metav1.LabelSelector{}
	}
	if *mp == nil {
		*mp = ptr(admv1.Equivalent)
	}
	if *fp == nil {
		*fp = ptr(admv1.Fail)
	}
	if *ts == nil {
		*ts = ptr(int32(10))
	}
	for i := range rules {
		if rules[i].Scope == nil {
			rules[i].Scope = ptr(admv1.AllScopes)
		}
	}
	if cc.Service != nil && cc.Service.Port == nil {
		cc.Service.Port = ptr(int32(443))
	}
}

func defaultContainers(cs []corev1.Container) {
	for i := range cs {
		c := &cs[i]
		if c.TerminationMessagePath == "" {
			c.TerminationMessagePath = corev1.TerminationMessagePathDefault
		}
		if c.TerminationMessagePolicy == "" {
			c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
		}
		if c.ImagePullPolicy == "" {
			c.ImagePullPolicy = corev1.PullIfNotPresent
		}
		for j := range c.Ports {
			if c.Ports[j].Protocol == "" {
				c.Ports[j].Protocol = corev1.ProtocolTCP
			}
		}
		// As kube-apiserver does: limits without requests default the requests.
		for name, q := range c.Resources.Limits {
			if _, ok := c.Resources.Requests[name]; !ok {
				if c.Resources.Requests == nil {
					c.Resources.Requests = corev1.ResourceList{}
				}
				c.Resources.Requests[name] = q.DeepCopy()
			}
		}
	}
}

func defaultPodSpec(s *corev1.PodSpec) {
	if s.RestartPolicy == "" {
		s.RestartPolicy = corev1.RestartPolicyAlways
	}
	if s.DNSPolicy == "" {
		s.DNSPolicy = corev1.DNSClusterFirst
	}
	if s.SchedulerName == "" {
		s.SchedulerName = corev1.DefaultSchedulerName
	}
	if s.TerminationGracePeriodSeconds == nil {
		s.TerminationGracePeriodSeconds = ptr(int64(corev1.DefaultTerminationGracePeriodSeconds))
	}
	if s.SecurityContext == nil {
		s.SecurityContext = &corev1.PodSecurityContext{}
	}
	defaultContainers(s.InitContainers)
	defaultContainers(s.Containers)
}

func init() {
	Scheme.AddTypeDefaultingFunc(&admv1.MutatingWebhookConfiguration{}, func(o interface{}) {
		for i := range o.(*admv1.MutatingWebhookConfiguration).Webhooks {
			w := &o.(*admv1.MutatingWebhookConfiguration).Webhooks[i]
			defaultWebhook(&w.NamespaceSelector, &w.ObjectSelector, &w.MatchPolicy, &w.FailurePolicy, &w.TimeoutSeconds, w.Rules, &w.ClientConfig)
			if w.ReinvocationPolicy == nil {
				w.ReinvocationPolicy = ptr(admv1.NeverReinvocationPolicy)
			}
		}
	})
	Scheme.AddTypeDefaultingFunc(&admv1.ValidatingWebhookConfiguration{}, func(o interface{}) {
		for i := range o.(*admv1.ValidatingWebhookConfiguration).Webhooks {
			w := &o.(*admv1.ValidatingWebhookConfiguration).Webhooks[i]
			defaultWebhook(&w.NamespaceSelector, &w.ObjectSelector, &w.MatchPolicy, &w.FailurePolicy, &w.TimeoutSeconds, w.Rules, &w.ClientConfig)
		}
	})
	Scheme.AddTypeDefaultingFunc(&corev1.Pod{}, func(o interface{}) { defaultPodSpec(&o.(*corev1.Pod).Spec) })
	Scheme.AddTypeDefaultingFunc(&appsv1.Deployment{}, func(o interface{}) {
		d := o.(*appsv1.Deployment)
		if d.Spec.Replicas == nil {
			d.Spec.Replicas = ptr(int32(1))
		}
		if d.Spec.Strategy.Type == "" {
			d.Spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
		}
		if d.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType && d.Spec.Strategy.RollingUpdate == nil {
			q := intstr.FromString("25%")
			d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxUnavailable: &q, MaxSurge: &q}
		}
		if d.Spec.RevisionHistoryLimit == nil {
			d.Spec.RevisionHistoryLimit = ptr(int32(10))
		}
		if d.Spec.ProgressDeadlineSeconds == nil {
			d.Spec.ProgressDeadlineSeconds = ptr(int32(600))
		}
		defaultPodSpec(&d.Spec.Template.Spec)
	})
	Scheme.AddTypeDefaultingFunc(&appsv1.ReplicaSet{}, func(o interface{}) {
		rs := o.(*appsv1.ReplicaSet)
		if rs.Spec.Replicas == nil {
			rs.Spec.Replicas = ptr(int32(1))
		}
		defaultPodSpec(&rs.Spec.Template.Spec)
	})
	Scheme.AddTypeDefaultingFunc(&appsv1.StatefulSet{}, func(o interface{}) {
		s := o.(*appsv1.StatefulSet)
		if s.Spec.Replicas == nil {
			s.Spec.Replicas = ptr(int32(1))
		}
		if s.Spec.PodManagementPolicy == "" {
			s.Spec.PodManagementPolicy = appsv1.OrderedReadyPodManagement
		}
		if s.Spec.UpdateStrategy.Type == "" {
			s.Spec.UpdateStrategy.Type = appsv1.RollingUpdateStatefulSetStrategyType
		}
		if s.Spec.UpdateStrategy.Type == appsv1.RollingUpdateStatefulSetStrategyType && s.Spec.UpdateStrategy.RollingUpdate == nil {
			s.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr(int32(0))}
		}
		if s.Spec.RevisionHistoryLimit == nil {
			s.Spec.RevisionHistoryLimit = ptr(int32(10))
		}
		defaultPodSpec(&s.Spec.Template.Spec)
	})
	// kube-apiserver labels every namespace with its own name (the label webhooks select namespaces by).
	Scheme.AddTypeDefaultingFunc(&corev1.Namespace{}, func(o interface{}) {
		ns := o.(*corev1.Namespace)
		if ns.Name == "" {
			return
		}
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels["kubernetes.io/metadata.name"] = ns.Name
	})
	Scheme.AddTypeDefaultingFunc(&corev1.Service{}, func(o interface{}) {
		s := o.(*corev1.Service)
		if s.Spec.Type == "" {
			s.Spec.Type = corev1.ServiceTypeClusterIP
		}
		if s.Spec.SessionAffinity == "" {
			s.Spec.SessionAffinity = corev1.ServiceAffinityNone
		}
		for i := range s.Spec.Ports {
			p := &s.Spec.Ports[i]
			if p.Protocol == "" {
				p.Protocol = corev1.ProtocolTCP
			}
			if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 && p.TargetPort.StrVal == "" {
				p.TargetPort = intstr.FromInt32(p.Port)
			}
		}
	})
}
