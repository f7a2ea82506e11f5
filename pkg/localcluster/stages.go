package localcluster

import (
	"bytes"
	"fmt"

	"sigs.k8s.io/yaml"

	nodefast "sigs.k8s.io/kwok/kustomize/stage/node/fast"
	nodeheartbeat "sigs.k8s.io/kwok/kustomize/stage/node/heartbeat-with-lease"
	podfast "sigs.k8s.io/kwok/kustomize/stage/pod/fast"
)

// AnnotationRunFor keeps a Job's Pod running on the local cluster, as a
// real build would, for the duration it holds (a Go duration, such as
// "90s") or until the time it holds (RFC 3339), before kwok finishes it. Without it, kwok finishes a Job's Pod as soon as
// it runs. It is kwok's own annotation for its pod-complete stage, and
// means nothing to a real kubelet.
const AnnotationRunFor = "pod-complete.stage.kwok.x-k8s.io/delay"

// kwokStages returns the Stages the local cluster's kwok runs: kwok's
// defaults for kwokctl (fast node and Pod stages, node heartbeats with a
// lease), with one change. A Job's Pod is finished after the delay
// AnnotationRunFor names, so that builds hold their capacity, and can lose
// their node, in tests and in the demo. kwokctl runs either its defaults or
// the Stages its configuration lists, never both; hence the whole set.
func kwokStages() ([]byte, error) {
	complete, err := withDelayFrom(podfast.DefaultPodComplete, AnnotationRunFor)
	if err != nil {
		return nil, err
	}
	docs := []string{
		nodefast.DefaultNodeInit,
		nodeheartbeat.DefaultNodeHeartbeatWithLease,
		podfast.DefaultPodReady,
		complete,
		podfast.DefaultPodDelete,
	}
	var out bytes.Buffer
	for _, d := range docs {
		out.WriteString("---\n")
		out.WriteString(d)
		if !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
			out.WriteByte('\n')
		}
	}
	return out.Bytes(), nil
}

// withDelayFrom returns the Stage in stage, delayed by the duration the
// annotation holds, and not at all when the Pod has none.
func withDelayFrom(stage, annotation string) (string, error) {
	var s map[string]any
	if err := yaml.Unmarshal([]byte(stage), &s); err != nil {
		return "", fmt.Errorf("read kwok's stage: %w", err)
	}
	spec, ok := s["spec"].(map[string]any)
	if !ok {
		return "", fmt.Errorf("kwok's stage has no spec")
	}
	spec["delay"] = map[string]any{
		"durationMilliseconds": 0,
		"durationFrom":         map[string]any{"expressionFrom": fmt.Sprintf(`.metadata.annotations[%q]`, annotation)},
	}
	out, err := yaml.Marshal(s)
	if err != nil {
		return "", err
	}
	return string(out), nil
}
