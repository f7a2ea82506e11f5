// Package manifests embeds berth's generated and hand-written manifests so that
// binaries and tests use the very files the repository ships: the CRDs, the
// Workspace template policy and the local cluster's node pools.
package manifests

import (
	"embed"
	"io/fs"
)

//go:embed crds/*.yaml
var crds embed.FS

//go:embed policies/workspace-template.yaml
var workspacePolicy []byte

// WorkspacePolicy returns policies/workspace-template.yaml: the
// ValidatingAdmissionPolicy, and its binding, that let only a user who may
// create Pods in a namespace set a Workspace template there.
func WorkspacePolicy() []byte { return workspacePolicy }

//go:embed local-cluster/pools.yaml
var pools []byte

//go:embed local-cluster/metrics-server/*.yaml
var metricsServer embed.FS

// CRDs returns the CustomResourceDefinitions of berth's API, one YAML document
// per file.
func CRDs() fs.FS {
	sub, err := fs.Sub(crds, "crds")
	if err != nil {
		panic(err) // the embedded path is fixed at build time
	}
	return sub
}

// Pools returns local-cluster/pools.yaml, the local cluster's node pools.
func Pools() []byte { return pools }

// MetricsServer returns local-cluster/metrics-server, the kustomization
// kwokctl applies to a local cluster that runs metrics-server.
func MetricsServer() fs.FS {
	sub, err := fs.Sub(metricsServer, "local-cluster/metrics-server")
	if err != nil {
		panic(err) // the embedded path is fixed at build time
	}
	return sub
}
