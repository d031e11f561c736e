package main

// What a cluster has before anybody uses it: the namespaces default, kube-system and kube-public,
// and the metrics.k8s.io/v1beta1 resources that metrics-server would serve. Here PodMetrics and
// NodeMetrics are CRDs (stored objects that the simulator writes; clients read them exactly as from
// metrics-server). Runs as a post-start hook, so /readyz answers ok only once all of it exists.

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/dynamic"
)

var (
	namespacesGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	crdGVR        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

func metricsCRD(plural, singular, kind, scope string) map[string]interface{} {
	usage := map[string]interface{}{"type": "object", "additionalProperties": map[string]interface{}{"x-kubernetes-int-or-string": true,
		"anyOf": []interface{}{map[string]interface{}{"type": "integer"}, map[string]interface{}{"type": "string"}}}}
	props := map[string]interface{}{
		"apiVersion": map[string]interface{}{"type": "string"},
		"kind":       map[string]interface{}{"type": "string"},
		"metadata":   map[string]interface{}{"type": "object"},
		"timestamp":  map[string]interface{}{"type": "string", "format": "date-time"},
		"window":     map[string]interface{}{"type": "string"},
	}
	if kind == "PodMetrics" {
		props["containers"] = map[string]interface{}{"type": "array", "items": map[string]interface{}{"type": "object",
			"required": []interface{}{"name", "usage"},
			"properties": map[string]interface{}{"name": map[string]interface{}{"type": "string"}, "usage": usage}}}
	} else {
		props["usage"] = usage
	}
	return map[string]interface{}{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata": map[string]interface{}{
			"name": plural + ".metrics.k8s.io",
			// *.k8s.io groups require this annotation; the value documents that this is a stand-in.
			"annotations": map[string]interface{}{"api-approved.kubernetes.io": "unapproved, lazyscale test environment stand-in for metrics-server"},
		},
		"spec": map[string]interface{}{
			"group": "metrics.k8s.io",
			"scope": scope,
			"names": map[string]interface{}{"plural": plural, "singular": singular, "kind": kind, "listKind": kind + "List"},
			"versions": []interface{}{map[string]interface{}{
				"name": "v1beta1", "served": true, "storage": true,
				"schema": map[string]interface{}{"openAPIV3Schema": map[string]interface{}{"type": "object", "properties": props}},
			}},
		},
	}
}

func bootstrap(hookCtx genericapiserver.PostStartHookContext) error {
	client, err := dynamic.NewForConfig(hookCtx.LoopbackClientConfig)
	if err != nil {
		return err
	}
	objs := []struct {
		gvr schema.GroupVersionResource
		obj map[string]interface{}
	}{
		{namespacesGVR, map[string]interface{}{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]interface{}{"name": "default"}}},
		{namespacesGVR, map[string]interface{}{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]interface{}{"name": "kube-system"}}},
		{namespacesGVR, map[string]interface{}{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]interface{}{"name": "kube-public"}}},
		{crdGVR, metricsCRD("pods", "podmetrics", "PodMetrics", "Namespaced")},
		{crdGVR, metricsCRD("nodes", "nodemetrics", "NodeMetrics", "Cluster")},
	}
	ctx := hookCtx.Context
	for _, o := range objs {
		o := o
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := client.Resource(o.gvr).Create(ctx, &unstructured.Unstructured{Object: o.obj}, metav1.CreateOptions{})
			return err == nil || apierrors.IsAlreadyExists(err), nil
		})
		if err != nil {
			return fmt.Errorf("bootstrap %s: %w", o.gvr.Resource, err)
		}
	}
	// Ready only when the metrics resources are served.
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := client.Resource(schema.GroupVersionResource{Group: "metrics.k8s.io", Version: "v1beta1", Resource: "pods"}).
			Namespace("default").List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, nil
	})
}
