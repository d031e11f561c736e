package main

// pods/eviction: deletes the pod unless a PodDisruptionBudget selecting it would be violated.
// No disruption controller runs, so the budget is computed at request time from the Ready pods
// that the budget selects (what the disruption controller would have written into its status).

import (
	"context"
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
)

type evictionREST struct {
	pods, pdbs *genericregistry.Store
}

var _ rest.NamedCreater = &evictionREST{}

func (r *evictionREST) New() runtime.Object { return &policyv1.Eviction{} }
func (r *evictionREST) Destroy()            {}
func (r *evictionREST) GroupVersionKind(schema.GroupVersion) schema.GroupVersionKind {
	return policyv1.SchemeGroupVersion.WithKind("Eviction")
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (r *evictionREST) Create(ctx context.Context, name string, obj runtime.Object, createValidation rest.ValidateObjectFunc,
	options *metav1.CreateOptions) (runtime.Object, error) {
	ev, ok := obj.(*policyv1.Eviction)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not an Eviction: %T", obj))
	}
	if ev.Name != "" && ev.Name != name {
		return nil, apierrors.NewBadRequest("name in URL does not match name in Eviction object")
	}
	got, err := r.pods.Get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	pod := got.(*corev1.Pod)
	if podReady(pod) {
		if err := r.checkBudgets(ctx, pod); err != nil {
			return nil, err
		}
	}
	delOpts := ev.DeleteOptions
	if delOpts == nil {
		delOpts = &metav1.DeleteOptions{}
	}
	if _, _, err := r.pods.Delete(ctx, name, rest.ValidateAllObjectFunc, delOpts); err != nil {
		return nil, err
	}
	return &metav1.Status{Status: metav1.StatusSuccess, Code: http.StatusCreated}, nil
}

func (r *evictionREST) checkBudgets(ctx context.Context, pod *corev1.Pod) error {
	list, err := r.pdbs.List(ctx, &metainternalversion.ListOptions{})
	if err != nil {
		return err
	}
	for _, pdb := range list.(*policyv1.PodDisruptionBudgetList).Items {
		if pdb.Spec.Selector == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		podList, err := r.pods.List(ctx, &metainternalversion.ListOptions{LabelSelector: sel})
		if err != nil {
			return err
		}
		total, healthy := 0, 0
		for i := range podList.(*corev1.PodList).Items {
			total++
			if podReady(&podList.(*corev1.PodList).Items[i]) {
				healthy++
			}
		}
		allowed := 0
		switch {
		case pdb.Spec.MinAvailable != nil:
			min, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MinAvailable, total, true)
			if err != nil {
				return apierrors.NewBadRequest(err.Error())
			}
			allowed = healthy - min
		case pdb.Spec.MaxUnavailable != nil:
			max, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MaxUnavailable, total, true)
			if err != nil {
				return apierrors.NewBadRequest(err.Error())
			}
			allowed = max - (total - healthy)
		default:
			continue
		}
		if allowed < 1 {
			e := apierrors.NewTooManyRequests(fmt.Sprintf("Cannot evict pod as it would violate the pod's disruption budget %q.", pdb.Name), 10)
			e.ErrStatus.Details.Causes = append(e.ErrStatus.Details.Causes, metav1.StatusCause{Type: policyv1.DisruptionBudgetCause,
				Message: fmt.Sprintf("The disruption budget %s needs %d healthy pods and has %d currently", pdb.Name, healthy-allowed, healthy)})
			return e
		}
	}
	return nil
}
