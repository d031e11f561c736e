package main

// The non-aggregated /apis list of the front server: apiextensions.k8s.io plus every group that
// has a served CRD version, kept up to date by a CRD informer.

import (
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	extapiserver "k8s.io/apiextensions-apiserver/pkg/apiserver"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/tools/cache"
)

func installLegacyAPIsDiscovery(front *genericapiserver.GenericAPIServer, ext *extapiserver.CustomResourceDefinitions) {
	gv := func(g, v string) metav1.GroupVersionForDiscovery {
		return metav1.GroupVersionForDiscovery{GroupVersion: schema.GroupVersion{Group: g, Version: v}.String(), Version: v}
	}
	front.DiscoveryGroupManager.AddGroup(metav1.APIGroup{Name: apiextv1.GroupName,
		Versions: []metav1.GroupVersionForDiscovery{gv(apiextv1.GroupName, "v1")}, PreferredVersion: gv(apiextv1.GroupName, "v1")})
	inf := ext.Informers.Apiextensions().V1().CustomResourceDefinitions()
	resync := func(group string) {
		crds, err := inf.Lister().List(labels.Everything())
		if err != nil {
			return
		}
		var versions []metav1.GroupVersionForDiscovery
		seen := map[string]bool{}
		for _, crd := range crds {
			if crd.Spec.Group != group {
				continue
			}
			// the storage version is the preferred one, as for kube-apiserver
			for _, v := range crd.Spec.Versions {
				if v.Served && v.Storage && !seen[v.Name] {
					seen[v.Name] = true
					versions = append(versions, gv(group, v.Name))
				}
			}
			for _, v := range crd.Spec.Versions {
				if v.Served && !seen[v.Name] {
					seen[v.Name] = true
					versions = append(versions, gv(group, v.Name))
				}
			}
		}
		if len(versions) == 0 {
			front.DiscoveryGroupManager.RemoveGroup(group)
			return
		}
		front.DiscoveryGroupManager.AddGroup(metav1.APIGroup{Name: group, Versions: versions, PreferredVersion: versions[0]})
	}
	groupOf := func(obj interface{}) string {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if c, ok := obj.(*apiextv1.CustomResourceDefinition); ok {
			return c.Spec.Group
		}
		return ""
	}
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o interface{}) { resync(groupOf(o)) },
		UpdateFunc: func(_, o interface{}) { resync(groupOf(o)) },
		DeleteFunc: func(o interface{}) { resync(groupOf(o)) },
	})
}
