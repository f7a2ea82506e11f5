package manager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// SelfTest asks the API server to create, in a dry run, a labelled
// workspace Pod in namespace ns, a namespace of an Organization, and
// checks that berth's webhooks mutated it: the org label taken from the
// namespace, and a security context hardened to Pod Security restricted.
// Nothing is created. It is the chart's helm test.
func SelfTest(ctx context.Context, c client.Client, ns string, out io.Writer) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "berth-selftest-", Namespace: ns,
			Labels: map[string]string{berthv1alpha1.LabelClass: string(berthv1alpha1.ClassWorkspace), berthv1alpha1.LabelUser: "berth-selftest"},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "registry.k8s.io/pause:3.10"}}},
	}
	if err := c.Create(ctx, pod, client.DryRunAll); err != nil {
		return fmt.Errorf("create a labelled workspace Pod in namespace %s (dry run): %w", ns, err)
	}
	var problems []string
	org := pod.Labels[berthv1alpha1.LabelOrg]
	if org == "" {
		problems = append(problems, fmt.Sprintf("it has no %s label: berth's Pod webhook did not see it; is berth-manager running, and does namespace %s belong to an Organization (label %s)?",
			berthv1alpha1.LabelOrg, ns, berthv1alpha1.LabelOrg))
	}
	if sc := pod.Spec.SecurityContext; sc == nil || !ptr.Deref(sc.RunAsNonRoot, false) ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		problems = append(problems, "its security context is not hardened (runAsNonRoot, seccomp RuntimeDefault)")
	}
	if sc := pod.Spec.Containers[0].SecurityContext; sc == nil || ptr.Deref(sc.AllowPrivilegeEscalation, true) {
		problems = append(problems, "its container may escalate privileges")
	}
	if len(problems) > 0 {
		return errors.New("berth did not mutate the Pod: " + strings.Join(problems, "; "))
	}
	fmt.Fprintf(out, "berth mutated a workspace Pod in namespace %s: org %s, runAsNonRoot, seccomp RuntimeDefault, no privilege escalation, scheduler %q, priority class %q\n",
		ns, org, pod.Spec.SchedulerName, pod.Spec.PriorityClassName)
	return nil
}
