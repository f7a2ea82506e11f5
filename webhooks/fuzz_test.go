package webhooks_test

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/diff"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/webhooks"
)

// fuzzPolicies are the spot policies a fuzz input picks from, the unset one
// and an unknown one included.
var fuzzPolicies = []berthv1alpha1.SpotPolicy{"", berthv1alpha1.SpotOnly, berthv1alpha1.PreferSpot, berthv1alpha1.OnDemand, "Sometimes"}

// fuzzSeeds are Pods, as JSON, that set what MutatePod touches in unusual
// ways: init containers, several node selector terms, tolerations, security
// contexts, odd quantities, names berth uses for its own volumes.
var fuzzSeeds = []string{
	`{}`,
	`{"spec":{"containers":[]}}`,
	`{"metadata":{"labels":{"berth.dev/org":"evil"},"annotations":{"karpenter.sh/do-not-disrupt":"false"}},
	  "spec":{"schedulerName":"default-scheduler",
	    "initContainers":[{"name":"init","resources":{"requests":{"cpu":"100m"}},"securityContext":{"runAsUser":0,"capabilities":{"drop":["NET_RAW"]}}}],
	    "containers":[{"name":"main","env":[{"name":"MAVEN_OPTS","value":"-Xmx1g"}]},{"name":"side","resources":{"limits":{"memory":"1Gi"}}}],
	    "securityContext":{"runAsNonRoot":false,"fsGroup":5,"seccompProfile":{"type":"Unconfined"}}}}`,
	`{"spec":{"containers":[{"name":"main"}],
	    "affinity":{"nodeAffinity":{
	      "requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[
	        {"matchExpressions":[{"key":"topology.kubernetes.io/zone","operator":"In","values":["a"]}]},
	        {"matchExpressions":[{"key":"berth.dev/local-ssd","operator":"In","values":["true"]}],"matchFields":[{"key":"metadata.name","operator":"In","values":["n1"]}]}]},
	      "preferredDuringSchedulingIgnoredDuringExecution":[{"weight":100,"preference":{"matchExpressions":[{"key":"kubernetes.azure.com/scalesetpriority","operator":"In","values":["spot"]}]}}]},
	      "podAntiAffinity":{}},
	    "tolerations":[{"key":"kubernetes.azure.com/scalesetpriority","operator":"Equal","value":"spot","effect":"NoSchedule"},{"operator":"Exists"}]}}`,
	`{"spec":{"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[]}}},"containers":[{"name":"a"}]}}`,
	`{"spec":{"volumes":[{"name":"berth-workspace","hostPath":{"path":"/"}},{"name":"berth-cache","emptyDir":{}}],
	    "containers":[{"name":"a","volumeMounts":[{"name":"x","mountPath":"/workspace"},{"name":"y","mountPath":"/cache"}],"ports":[{"containerPort":80,"hostPort":80}]}]}}`,
	`{"spec":{"containers":[
	    {"name":"a","resources":{"limits":{"nvidia.com/gpu":"-1","cpu":"-2","ephemeral-storage":"1e30"},"requests":{"memory":"0.5","nvidia.com/gpu":"3"}}},
	    {"name":"b","resources":{"limits":{"nvidia.com/gpu":"1"},"requests":{"cpu":"9223372036854775807"}}}],
	  "initContainers":[{"name":"i","resources":{"limits":{"nvidia.com/gpu":"0.5"}}}]}}`,
	`{"spec":{"containers":[{"name":"a","resources":{"limits":{"nvidia.com/gpu":"9223372036854775807"}}},{"name":"b","resources":{"limits":{"nvidia.com/gpu":"9223372036854775807"}}}]}}`,
	`{"metadata":{"labels":{"berth.dev/project":"shop"}},"spec":{"initContainers":[{"name":"berth-blob-fetch"}],
	    "volumes":[{"name":"berth-blob","emptyDir":{}}],
	    "containers":[{"name":"main","command":["mvn"],"env":[{"name":"BERTH_BLOB_CONNECTION_STRING","value":"x"},{"name":"MAVEN_OPTS","value":"-Xmx1g"}],"volumeMounts":[{"name":"x","mountPath":"/berth/bin"}]}]}}`,
	`{"metadata":{"labels":{"berth.dev/project":"shop"}},"spec":{"containers":[{"name":"main","command":["/berth/bin/berth-blob","run","--","make"]}]}}`,
	`{"spec":{"priorityClassName":"","priority":5,"preemptionPolicy":"Never","containers":[{"name":"a","securityContext":{"privileged":true,"allowPrivilegeEscalation":true,"capabilities":{"add":["SYS_ADMIN"],"drop":["ALL","ALL"]}}}]}}`,
}

func FuzzMutatePod(f *testing.F) {
	for i, s := range fuzzSeeds {
		f.Add([]byte(s), uint8(i), uint8(i), i%2 == 0, i%3 == 0)
	}
	b, err := json.Marshal(richPod())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, uint8(1), uint8(1), true, true)

	f.Fuzz(func(t *testing.T, data []byte, classIdx, policyIdx uint8, cache, priority bool) {
		var pod corev1.Pod
		if err := json.Unmarshal(data, &pod); err != nil {
			return
		}
		class := berthv1alpha1.Classes[int(classIdx)%len(berthv1alpha1.Classes)]
		ob := testOrg().SpotPolicy(fuzzPolicies[int(policyIdx)%len(fuzzPolicies)]).BuildScratch("5Gi", "7Gi")
		if cache {
			ob = ob.BuildCacheClaim("cache").Blob(berthv1alpha1.BlobSettings{AccountURL: "https://a.blob.core.windows.net", CredentialsSecret: &berthv1alpha1.SecretKeyRef{Name: "s"}})
		}
		tgt := target(t, class, ob.Obj())
		if priority {
			tgt.PriorityClass = &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "berth-" + string(class)}, Value: 100, PreemptionPolicy: ptr.To(corev1.PreemptNever)}
		}

		// Validating the raw Pod, as a Pod berth did not mutate, must not
		// panic either.
		raw := pod.DeepCopy()
		_ = webhooks.ValidatePod(&raw.ObjectMeta, &raw.Spec, tgt, field.NewPath("spec"))

		once := pod.DeepCopy()
		webhooks.MutatePod(&once.ObjectMeta, &once.Spec, tgt)
		twice := once.DeepCopy()
		webhooks.MutatePod(&twice.ObjectMeta, &twice.Spec, tgt)
		if !equality.Semantic.DeepEqual(once, twice) {
			t.Fatalf("MutatePod is not idempotent (class %s, policy %q):\n%s", class, tgt.Org.Spec.SpotPolicy, diff.Diff(once, twice))
		}
		if once.Labels[berthv1alpha1.LabelOrg] != tgt.Org.Name {
			t.Fatalf("org label is %q, want %q", once.Labels[berthv1alpha1.LabelOrg], tgt.Org.Name)
		}
		_ = webhooks.ValidatePod(&once.ObjectMeta, &once.Spec, tgt, field.NewPath("spec"))
	})
}

// TestFuzzSeedsDecode keeps the seed corpus useful: a seed that no longer
// decodes into a Pod would be skipped silently.
func TestFuzzSeedsDecode(t *testing.T) {
	for i, s := range fuzzSeeds {
		var pod corev1.Pod
		if err := json.Unmarshal([]byte(s), &pod); err != nil {
			t.Errorf("seed %d does not decode: %v", i, err)
		}
	}
}
