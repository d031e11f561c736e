package main

// Storage for the built-in types: one genericregistry.Store per resource, a reflection-based strategy
// (status/spec split, metadata.generation), and the subresources /scale, pods/eviction and pods/resize.

import (
	"context"
	"fmt"
	"reflect"

	admv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/names"
)

var (
	// Scheme holds every served built-in type, registered twice: as its real version and as the
	// "__internal" hub, so decode -> hub -> encode needs no conversion functions.
	Scheme         = runtime.NewScheme()
	Codecs         = serializer.NewCodecFactory(Scheme)
	ParameterCodec = runtime.NewParameterCodec(Scheme)

	storageVersions = []schema.GroupVersion{corev1.SchemeGroupVersion, appsv1.SchemeGroupVersion, admv1.SchemeGroupVersion,
		autoscalingv1.SchemeGroupVersion, coordinationv1.SchemeGroupVersion, eventsv1.SchemeGroupVersion, policyv1.SchemeGroupVersion}
)

func internal(group string) schema.GroupVersion {
	return schema.GroupVersion{Group: group, Version: runtime.APIVersionInternal}
}

func init() {
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, autoscalingv1.AddToScheme, admv1.AddToScheme,
		coordinationv1.AddToScheme, eventsv1.AddToScheme, policyv1.AddToScheme} {
		utilruntime.Must(add(Scheme))
	}
	Scheme.AddKnownTypes(internal(""), &corev1.Pod{}, &corev1.PodList{}, &corev1.Namespace{}, &corev1.NamespaceList{},
		&corev1.Service{}, &corev1.ServiceList{}, &corev1.ConfigMap{}, &corev1.ConfigMapList{},
		&corev1.Secret{}, &corev1.SecretList{}, &corev1.ServiceAccount{}, &corev1.ServiceAccountList{}, &corev1.Event{}, &corev1.EventList{},
		&corev1.Node{}, &corev1.NodeList{})
	Scheme.AddKnownTypes(internal("coordination.k8s.io"), &coordinationv1.Lease{}, &coordinationv1.LeaseList{})
	Scheme.AddKnownTypes(internal("events.k8s.io"), &eventsv1.Event{}, &eventsv1.EventList{})
	Scheme.AddKnownTypes(internal("apps"), &appsv1.Deployment{}, &appsv1.DeploymentList{}, &appsv1.ReplicaSet{}, &appsv1.ReplicaSetList{},
		&appsv1.StatefulSet{}, &appsv1.StatefulSetList{}, &appsv1.ControllerRevision{}, &appsv1.ControllerRevisionList{})
	Scheme.AddKnownTypes(internal("autoscaling"), &autoscalingv1.Scale{})
	Scheme.AddKnownTypes(internal("policy"), &policyv1.Eviction{}, &policyv1.PodDisruptionBudget{}, &policyv1.PodDisruptionBudgetList{})
	Scheme.AddKnownTypes(internal("admissionregistration.k8s.io"), &admv1.MutatingWebhookConfiguration{}, &admv1.MutatingWebhookConfigurationList{},
		&admv1.ValidatingWebhookConfiguration{}, &admv1.ValidatingWebhookConfigurationList{})
	unversioned := schema.GroupVersion{Group: "", Version: "v1"}
	Scheme.AddUnversionedTypes(unversioned, &metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})
	utilruntime.Must(Scheme.AddFieldLabelConversionFunc(corev1.SchemeGroupVersion.WithKind("Pod"), func(label, value string) (string, string, error) {
		switch label {
		case "metadata.name", "metadata.namespace", "spec.nodeName", "status.phase", "spec.serviceAccountName":
			return label, value, nil
		}
		return "", "", fmt.Errorf("field label not supported: %s", label)
	}))
}

// ---- strategy: no validation; status/spec split and generation through reflection

type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	namespaced bool
	status     bool // the /status subresource: keep the spec
	resize     bool // pods/resize: take only container resources from the update
	onCreate   func(obj runtime.Object)
}

func fieldOf(obj runtime.Object, name string) reflect.Value {
	v := reflect.ValueOf(obj)
	if v.Kind() == reflect.Ptr {
		v = v.Elem()
	}
	return v.FieldByName(name)
}

func (s strategy) NamespaceScoped() bool { return s.namespaced }
func (s strategy) PrepareForCreate(ctx context.Context, obj runtime.Object) {
	if st := fieldOf(obj, "Status"); st.IsValid() {
		st.Set(reflect.Zero(st.Type()))
	}
	if fieldOf(obj, "Spec").IsValid() {
		if m, err := meta.Accessor(obj); err == nil {
			m.SetGeneration(1)
		}
	}
	if s.onCreate != nil {
		s.onCreate(obj)
	}
}
func (s strategy) Validate(ctx context.Context, obj runtime.Object) field.ErrorList  { return nil }
func (s strategy) WarningsOnCreate(ctx context.Context, obj runtime.Object) []string { return nil }
func (s strategy) Canonicalize(obj runtime.Object)                                   {}
func (s strategy) AllowCreateOnUpdate() bool                                         { return false }
func (s strategy) AllowUnconditionalUpdate() bool                                    { return true }
func (s strategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	nm, _ := meta.Accessor(obj)
	om, _ := meta.Accessor(old)
	if s.resize {
		prepareResize(obj.(*corev1.Pod), old.(*corev1.Pod))
	}
	newSpec, oldSpec := fieldOf(obj, "Spec"), fieldOf(old, "Spec")
	newStatus, oldStatus := fieldOf(obj, "Status"), fieldOf(old, "Status")
	if s.status {
		if newSpec.IsValid() {
			newSpec.Set(oldSpec)
		}
		nm.SetGeneration(om.GetGeneration())
		return
	}
	if newStatus.IsValid() {
		newStatus.Set(oldStatus)
	}
	if newSpec.IsValid() {
		if !apiequality.Semantic.DeepEqual(newSpec.Interface(), oldSpec.Interface()) {
			nm.SetGeneration(om.GetGeneration() + 1)
		} else {
			nm.SetGeneration(om.GetGeneration())
		}
	}
}

// prepareResize keeps everything of the stored pod except the containers' resources and resize
// policies, as the pods/resize subresource of Kubernetes 1.33+ does.
func prepareResize(newPod, oldPod *corev1.Pod) {
	want := map[string]corev1.Container{}
	for _, c := range newPod.Spec.Containers {
		want[c.Name] = c
	}
	spec := *oldPod.Spec.DeepCopy()
	for i := range spec.Containers {
		if c, ok := want[spec.Containers[i].Name]; ok {
			spec.Containers[i].Resources = *c.Resources.DeepCopy()
			if c.ResizePolicy != nil {
				spec.Containers[i].ResizePolicy = c.ResizePolicy
			}
		}
	}
	rv := newPod.ResourceVersion
	newPod.ObjectMeta = *oldPod.ObjectMeta.DeepCopy()
	newPod.ResourceVersion = rv
	newPod.Spec = spec
}

func (s strategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	return nil
}
func (s strategy) WarningsOnUpdate(ctx context.Context, obj, old runtime.Object) []string { return nil }

type stores struct {
	main, status, resize *genericregistry.Store
}

func newStore(optsGetter generic.RESTOptionsGetter, gr schema.GroupResource, singular string, newFn, newListFn func() runtime.Object,
	namespaced bool, attrs storage.AttrFunc, onCreate func(runtime.Object)) (stores, error) {
	st := strategy{ObjectTyper: Scheme, NameGenerator: names.SimpleNameGenerator, namespaced: namespaced, onCreate: onCreate}
	if attrs == nil {
		attrs = storage.DefaultClusterScopedAttr
		if namespaced {
			attrs = storage.DefaultNamespaceScopedAttr
		}
	}
	store := &genericregistry.Store{
		NewFunc:                   newFn,
		NewListFunc:               newListFn,
		DefaultQualifiedResource:  gr,
		SingularQualifiedResource: schema.GroupResource{Group: gr.Group, Resource: singular},
		CreateStrategy:            st,
		UpdateStrategy:            st,
		DeleteStrategy:            st,
		TableConvertor:            rest.NewDefaultTableConvertor(gr),
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: optsGetter, AttrFunc: attrs}); err != nil {
		return stores{}, err
	}
	statusStore, resizeStore := *store, *store
	sst, rst := st, st
	sst.status = true
	rst.resize = true
	statusStore.UpdateStrategy = sst
	resizeStore.UpdateStrategy = rst
	return stores{main: store, status: &statusStore, resize: &resizeStore}, nil
}

// ---- /scale for deployments, replicasets and statefulsets

// scalable maps one workload kind to and from autoscaling/v1 Scale.
type scalable struct {
	replicas    func(runtime.Object) *int32
	statusCount func(runtime.Object) int32
	selector    func(runtime.Object) *metav1.LabelSelector
}

var (
	deploymentScale = scalable{
		replicas:    func(o runtime.Object) *int32 { return o.(*appsv1.Deployment).Spec.Replicas },
		statusCount: func(o runtime.Object) int32 { return o.(*appsv1.Deployment).Status.Replicas },
		selector:    func(o runtime.Object) *metav1.LabelSelector { return o.(*appsv1.Deployment).Spec.Selector },
	}
	replicaSetScale = scalable{
		replicas:    func(o runtime.Object) *int32 { return o.(*appsv1.ReplicaSet).Spec.Replicas },
		statusCount: func(o runtime.Object) int32 { return o.(*appsv1.ReplicaSet).Status.Replicas },
		selector:    func(o runtime.Object) *metav1.LabelSelector { return o.(*appsv1.ReplicaSet).Spec.Selector },
	}
	statefulSetScale = scalable{
		replicas:    func(o runtime.Object) *int32 { return o.(*appsv1.StatefulSet).Spec.Replicas },
		statusCount: func(o runtime.Object) int32 { return o.(*appsv1.StatefulSet).Status.Replicas },
		selector:    func(o runtime.Object) *metav1.LabelSelector { return o.(*appsv1.StatefulSet).Spec.Selector },
	}
)

type scaleREST struct {
	store *genericregistry.Store
	kind  scalable
}

var _ rest.Patcher = &scaleREST{}

func (r *scaleREST) New() runtime.Object   { return &autoscalingv1.Scale{} }
func (r *scaleREST) Destroy()              {}
func (r *scaleREST) NamespaceScoped() bool { return true }
func (r *scaleREST) GroupVersionKind(schema.GroupVersion) schema.GroupVersionKind {
	return autoscalingv1.SchemeGroupVersion.WithKind("Scale")
}

func (r *scaleREST) scaleOf(obj runtime.Object) *autoscalingv1.Scale {
	m, _ := meta.Accessor(obj)
	var replicas int32 = 1
	if p := r.kind.replicas(obj); p != nil {
		replicas = *p
	}
	sel := ""
	if ls := r.kind.selector(obj); ls != nil {
		if s, err := metav1.LabelSelectorAsSelector(ls); err == nil {
			sel = s.String()
		}
	}
	return &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUID(),
			ResourceVersion: m.GetResourceVersion(), CreationTimestamp: m.GetCreationTimestamp()},
		Spec:   autoscalingv1.ScaleSpec{Replicas: replicas},
		Status: autoscalingv1.ScaleStatus{Replicas: r.kind.statusCount(obj), Selector: sel},
	}
}

func (r *scaleREST) Get(ctx context.Context, name string, opts *metav1.GetOptions) (runtime.Object, error) {
	obj, err := r.store.Get(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	return r.scaleOf(obj), nil
}

type scaleUpdatedObjectInfo struct {
	r   *scaleREST
	req rest.UpdatedObjectInfo
}

func (i scaleUpdatedObjectInfo) Preconditions() *metav1.Preconditions { return i.req.Preconditions() }
func (i scaleUpdatedObjectInfo) UpdatedObject(ctx context.Context, oldObj runtime.Object) (runtime.Object, error) {
	obj := oldObj.DeepCopyObject()
	updated, err := i.req.UpdatedObject(ctx, i.r.scaleOf(obj))
	if err != nil {
		return nil, err
	}
	sc, ok := updated.(*autoscalingv1.Scale)
	if !ok {
		return nil, fmt.Errorf("expected Scale, got %T", updated)
	}
	m, _ := meta.Accessor(obj)
	if sc.ResourceVersion != "" {
		m.SetResourceVersion(sc.ResourceVersion)
	}
	rep := sc.Spec.Replicas
	reflect.ValueOf(obj).Elem().FieldByName("Spec").FieldByName("Replicas").Set(reflect.ValueOf(&rep))
	return obj, nil
}

func (r *scaleREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc,
	updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	cv := func(ctx context.Context, obj runtime.Object) error {
		if createValidation == nil {
			return nil
		}
		return createValidation(ctx, r.scaleOf(obj))
	}
	uv := func(ctx context.Context, obj, old runtime.Object) error {
		if updateValidation == nil {
			return nil
		}
		return updateValidation(ctx, r.scaleOf(obj), r.scaleOf(old))
	}
	obj, _, err := r.store.Update(ctx, name, scaleUpdatedObjectInfo{r: r, req: objInfo}, cv, uv, false, options)
	if err != nil {
		return nil, false, err
	}
	return r.scaleOf(obj), false, nil
}

// ---- install

func podAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil, fmt.Errorf("not a pod: %T", obj)
	}
	fs := fields.Set{"spec.nodeName": p.Spec.NodeName, "status.phase": string(p.Status.Phase), "spec.serviceAccountName": p.Spec.ServiceAccountName}
	return labels.Set(p.Labels), generic.AddObjectMetaFieldsSet(fs, &p.ObjectMeta, true), nil
}

type res struct {
	path, singular string
	newFn, listFn  func() runtime.Object
	namespaced     bool
	attrs          storage.AttrFunc
	onCreate       func(runtime.Object)
	status         bool
	short          []string
}

func r[T any, L any](path, singular string, namespaced, status bool, short ...string) res {
	return res{path: path, singular: singular, namespaced: namespaced, status: status, short: short,
		newFn:  func() runtime.Object { return any(new(T)).(runtime.Object) },
		listFn: func() runtime.Object { return any(new(L)).(runtime.Object) }}
}

func makeStorage(og generic.RESTOptionsGetter, group string, rs []res) (map[string]rest.Storage, map[string]stores, error) {
	m := map[string]rest.Storage{}
	all := map[string]stores{}
	for _, r := range rs {
		st, err := newStore(og, schema.GroupResource{Group: group, Resource: r.path}, r.singular, r.newFn, r.listFn, r.namespaced, r.attrs, r.onCreate)
		if err != nil {
			return nil, nil, err
		}
		var cats []string
		if r.namespaced && (group == "" || group == "apps") && r.path != "events" {
			cats = []string{"all"}
		}
		m[r.path] = &storeWithNames{Store: st.main, short: r.short, categories: cats}
		all[r.path] = st
		if r.status {
			m[r.path+"/status"] = st.status
		}
	}
	return m, all, nil
}

func installCoreAPIs(s *genericapiserver.GenericAPIServer, og generic.RESTOptionsGetter) error {
	pods := r[corev1.Pod, corev1.PodList]("pods", "pod", true, true, "po")
	pods.attrs = podAttrs
	pods.onCreate = func(o runtime.Object) { o.(*corev1.Pod).Status.Phase = corev1.PodPending }
	namespaces := r[corev1.Namespace, corev1.NamespaceList]("namespaces", "namespace", false, true, "ns")
	namespaces.onCreate = func(o runtime.Object) { o.(*corev1.Namespace).Status.Phase = corev1.NamespaceActive }
	coreRes, coreStores, err := makeStorage(og, "", []res{
		pods, namespaces,
		r[corev1.Node, corev1.NodeList]("nodes", "node", false, true, "no"),
		r[corev1.Service, corev1.ServiceList]("services", "service", true, true, "svc"),
		r[corev1.ConfigMap, corev1.ConfigMapList]("configmaps", "configmap", true, false, "cm"),
		r[corev1.Secret, corev1.SecretList]("secrets", "secret", true, false),
		r[corev1.ServiceAccount, corev1.ServiceAccountList]("serviceaccounts", "serviceaccount", true, false, "sa"),
		r[corev1.Event, corev1.EventList]("events", "event", true, false, "ev"),
	})
	if err != nil {
		return err
	}
	policyRes, policyStores, err := makeStorage(og, "policy", []res{
		r[policyv1.PodDisruptionBudget, policyv1.PodDisruptionBudgetList]("poddisruptionbudgets", "poddisruptionbudget", true, true, "pdb"),
	})
	if err != nil {
		return err
	}
	coreRes["pods/resize"] = coreStores["pods"].resize
	coreRes["pods/eviction"] = &evictionREST{pods: coreStores["pods"].main, pdbs: policyStores["poddisruptionbudgets"].main}
	coreInfo := genericapiserver.NewDefaultAPIGroupInfo("", Scheme, ParameterCodec, Codecs)
	coreInfo.VersionedResourcesStorageMap["v1"] = coreRes
	if err := s.InstallLegacyAPIGroup("/api", &coreInfo); err != nil {
		return err
	}

	appsRes, appsStores, err := makeStorage(og, "apps", []res{
		r[appsv1.Deployment, appsv1.DeploymentList]("deployments", "deployment", true, true, "deploy"),
		r[appsv1.ReplicaSet, appsv1.ReplicaSetList]("replicasets", "replicaset", true, true, "rs"),
		r[appsv1.StatefulSet, appsv1.StatefulSetList]("statefulsets", "statefulset", true, true, "sts"),
		r[appsv1.ControllerRevision, appsv1.ControllerRevisionList]("controllerrevisions", "controllerrevision", true, false),
	})
	if err != nil {
		return err
	}
	appsRes["deployments/scale"] = &scaleREST{store: appsStores["deployments"].main, kind: deploymentScale}
	appsRes["replicasets/scale"] = &scaleREST{store: appsStores["replicasets"].main, kind: replicaSetScale}
	appsRes["statefulsets/scale"] = &scaleREST{store: appsStores["statefulsets"].main, kind: statefulSetScale}
	appsInfo := genericapiserver.NewDefaultAPIGroupInfo("apps", Scheme, ParameterCodec, Codecs)
	appsInfo.VersionedResourcesStorageMap["v1"] = appsRes

	policyInfo := genericapiserver.NewDefaultAPIGroupInfo("policy", Scheme, ParameterCodec, Codecs)
	policyInfo.VersionedResourcesStorageMap["v1"] = policyRes

	admRes, _, err := makeStorage(og, "admissionregistration.k8s.io", []res{
		r[admv1.MutatingWebhookConfiguration, admv1.MutatingWebhookConfigurationList]("mutatingwebhookconfigurations", "mutatingwebhookconfiguration", false, false),
		r[admv1.ValidatingWebhookConfiguration, admv1.ValidatingWebhookConfigurationList]("validatingwebhookconfigurations", "validatingwebhookconfiguration", false, false),
	})
	if err != nil {
		return err
	}
	admInfo := genericapiserver.NewDefaultAPIGroupInfo("admissionregistration.k8s.io", Scheme, ParameterCodec, Codecs)
	admInfo.VersionedResourcesStorageMap["v1"] = admRes

	coordRes, _, err := makeStorage(og, "coordination.k8s.io", []res{
		r[coordinationv1.Lease, coordinationv1.LeaseList]("leases", "lease", true, false),
	})
	if err != nil {
		return err
	}
	coordInfo := genericapiserver.NewDefaultAPIGroupInfo("coordination.k8s.io", Scheme, ParameterCodec, Codecs)
	coordInfo.VersionedResourcesStorageMap["v1"] = coordRes

	evRes, _, err := makeStorage(og, "events.k8s.io", []res{
		r[eventsv1.Event, eventsv1.EventList]("events", "event", true, false, "ev"),
	})
	if err != nil {
		return err
	}
	evInfo := genericapiserver.NewDefaultAPIGroupInfo("events.k8s.io", Scheme, ParameterCodec, Codecs)
	evInfo.VersionedResourcesStorageMap["v1"] = evRes
	return s.InstallAPIGroups(&appsInfo, &policyInfo, &admInfo, &coordInfo, &evInfo)
}

// storeWithNames adds short names and categories (kubectl get po / deploy / all).
type storeWithNames struct {
	*genericregistry.Store
	short, categories []string
}

func (s *storeWithNames) ShortNames() []string { return s.short }
func (s *storeWithNames) Categories() []string { return s.categories }
