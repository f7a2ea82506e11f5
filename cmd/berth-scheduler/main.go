// Command berth-scheduler is kube-scheduler with berth's BerthPlacement
// plugin built in. It runs as a second scheduler with its own schedulerName
// (set in its KubeSchedulerConfiguration, see
// manifests/scheduler/berth-scheduler.yaml) and elects a leader like
// kube-scheduler does. It takes every kube-scheduler flag.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"

	"berth.dev/berth/plugins/placement"
)

func main() {
	cmd := app.NewSchedulerCommand(app.WithPlugin(placement.Name, placement.New))
	os.Exit(cli.Run(cmd))
}
