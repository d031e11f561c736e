// Command lazyscale-testenv-apiserver is the API server of lazyscale's test environment.
//
// It runs the real k8s.io/apiextensions-apiserver (CRDs) behind a small "core" server built on
// k8s.io/apiserver that stores a set of built-in k8s.io/api types in etcd through
// genericregistry.Store. Built-in types get no validation and only the defaulting in defaults.go;
// no controllers run (the lazyscale simulator plays that part). See testenv/README.md.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	extoptions "k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	"k8s.io/apiserver/pkg/endpoints/discovery/aggregated"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	openapiutil "k8s.io/apiserver/pkg/util/openapi"
	"k8s.io/component-base/cli"

	testenvopenapi "lazyscale-testenv/apiserver/openapi"
)

func main() {
	ctx := genericapiserver.SetupSignalContext()
	o := extoptions.NewCustomResourceDefinitionsServerOptions(os.Stdout, os.Stderr)
	// Test data only: no delegated authn/authz; every request (anonymous included) is allowed.
	o.RecommendedOptions.Authentication.RemoteKubeConfigFileOptional = true
	o.RecommendedOptions.Authentication.SkipInClusterLookup = true
	o.RecommendedOptions.Authorization.RemoteKubeConfigFileOptional = true
	o.RecommendedOptions.Authorization.AlwaysAllowGroups = []string{"system:masters", "system:authenticated", "system:unauthenticated"}
	o.RecommendedOptions.Authorization.AlwaysAllowPaths = []string{"*"}
	o.RecommendedOptions.Admission.DefaultOffPlugins.Insert("ValidatingAdmissionPolicy", "MutatingAdmissionPolicy")
	cmd := &cobra.Command{
		Use: "lazyscale-testenv-apiserver",
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return o.ServerRunOptions.ComponentGlobalsRegistry.Set()
		},
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if o.RecommendedOptions.CoreAPI.CoreAPIKubeconfigPath == "" {
				// The admission plugins' informers talk to this very server over loopback.
				p, err := writeSelfKubeconfig(o.RecommendedOptions.SecureServing.ServerCert.CertDirectory, o.RecommendedOptions.SecureServing.BindPort)
				if err != nil {
					return err
				}
				o.RecommendedOptions.CoreAPI.CoreAPIKubeconfigPath = p
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return run(c.Context(), o)
		},
	}
	cmd.SetContext(ctx)
	o.AddFlags(cmd.Flags())
	os.Exit(cli.Run(cmd))
}

func writeSelfKubeconfig(dir string, port int) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "self.kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: self
  cluster:
    server: https://127.0.0.1:%d
    insecure-skip-tls-verify: true
contexts:
- name: self
  context: {cluster: self, user: self}
users:
- name: self
  user: {}
current-context: self
`, port)
	return p, os.WriteFile(p, []byte(kc), 0o600)
}

func run(ctx context.Context, o *extoptions.CustomResourceDefinitionsServerOptions) error {
	extConfig, err := o.Config()
	if err != nil {
		return err
	}
	// One aggregated-discovery manager for both servers, so /apis lists CRD groups too.
	mgr := aggregated.NewResourceManager("apis")
	extConfig.GenericConfig.AggregatedDiscoveryGroupManager = mgr

	// The core server gets a shallow copy of the generic config, as kube-apiserver does for apiextensions.
	coreRC := *extConfig.GenericConfig
	coreRC.PostStartHooks = map[string]genericapiserver.PostStartHookConfigEntry{}
	getDefs := openapiutil.GetOpenAPIDefinitionsWithoutDisabledFeatures(testenvopenapi.GetOpenAPIDefinitions)
	coreRC.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(getDefs, openapinamer.NewDefinitionNamer(Scheme))
	coreRC.OpenAPIConfig.Info.Title = "lazyscale-testenv"
	coreRC.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(getDefs, openapinamer.NewDefinitionNamer(Scheme))
	coreRC.OpenAPIV3Config.Info.Title = "lazyscale-testenv"
	coreRC.EnableDiscovery = true
	etcdOpts := *o.RecommendedOptions.Etcd
	etcdOpts.StorageConfig.Codec = Codecs.LegacyCodec(storageVersions...)
	etcdOpts.SkipHealthEndpoints = true
	if err := etcdOpts.ApplyTo(&coreRC.Config); err != nil {
		return err
	}

	extServer, err := extConfig.Complete().New(genericapiserver.NewEmptyDelegate())
	if err != nil {
		return err
	}
	coreServer, err := coreRC.Complete().New("lazyscale-testenv-core", extServer.GenericAPIServer)
	if err != nil {
		return err
	}
	if err := installCoreAPIs(coreServer, coreRC.RESTOptionsGetter); err != nil {
		return err
	}
	installLegacyAPIsDiscovery(coreServer, extServer)
	// /readyz waits for this hook: default namespaces and the metrics.k8s.io resources exist once ready.
	if err := coreServer.AddPostStartHook("lazyscale-testenv-bootstrap", bootstrap); err != nil {
		return err
	}
	return coreServer.PrepareRun().RunWithContext(ctx)
}
