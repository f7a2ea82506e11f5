// Package webhooks holds berth's admission webhooks, one file per kind: Pods
// (pod_webhook.go) and Jobs (job_webhook.go). The decisions are pure functions
// of the object and a resolved Target (MutatePod, ValidatePod, quota checks),
// tested without a server; Setup wires them into a controller-runtime
// manager.
//
// Only objects labelled berth.dev/class are handled, never those in
// kube-system, kube-node-lease or berth's own namespace.
package webhooks
