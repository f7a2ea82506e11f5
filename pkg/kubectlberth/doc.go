// Package kubectlberth is kubectl berth, the developers' plugin: it puts a
// folder up as a project's sources, runs the build Job, follows it and
// brings its log and result.zip back, through berth-manager's project API
// and with the developer's own Kubernetes credentials.
package kubectlberth
