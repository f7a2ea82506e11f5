// Package localcluster runs berth's local cluster: a real kube-apiserver,
// kube-controller-manager and kube-scheduler on etcd, started by kwokctl with
// its binary runtime, and fake kwok nodes in pools shaped like a cloud's.
//
// The binaries come from the per-version tool cache that `make tools`
// (hack/tools.sh) fills. Nothing here needs Docker.
package localcluster
