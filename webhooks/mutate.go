package webhooks

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/placement"
	"berth.dev/berth/pkg/quota"
	"berth.dev/berth/pkg/requests"
)

// Names berth gives what it adds to a Pod, so a second pass recognises them.
const (
	ScratchVolume    = "berth-workspace"
	ScratchMountPath = "/workspace"
	CacheVolume      = "berth-cache"
	CacheMountPath   = "/cache"

	AnnotationSafeToEvict  = "cluster-autoscaler.kubernetes.io/safe-to-evict"
	AnnotationDoNotDisrupt = "karpenter.sh/do-not-disrupt"

	// NonRootID is the user and group berth runs containers as when the Pod
	// names none.
	NonRootID int64 = 1000
)

// cacheEnv points Maven and Gradle at the build cache volume.
var cacheEnv = []corev1.EnvVar{
	{Name: "MAVEN_OPTS", Value: "-Dmaven.repo.local=" + CacheMountPath + "/m2"},
	{Name: "GRADLE_USER_HOME", Value: CacheMountPath + "/gradle"},
}

// Target is everything a decision about one Pod needs, resolved before the
// pure functions of this package run.
type Target struct {
	Class berthv1alpha1.Class
	Org   *berthv1alpha1.Organization
	// PriorityClass is the class's PriorityClass, nil when the cluster has
	// none.
	PriorityClass *schedulingv1.PriorityClass
	// GlobalDefaultPriorityClass names the cluster's globalDefault
	// PriorityClass, if any. The API server writes it into Pods that name
	// none before berth sees them, so berth takes it for unset.
	GlobalDefaultPriorityClass string
	Config                     Config
	// Project is the berth.dev/project label, for the rules that validate
	// without the object's metadata.
	Project string
}

// MutatePod makes a labelled Pod (or a Job's pod template) safe, sized and
// placeable. It is idempotent: a second call changes nothing, so a Job's Pod
// passes the Pod webhook unchanged.
func MutatePod(meta *metav1.ObjectMeta, spec *corev1.PodSpec, t Target) {
	if meta.Labels == nil {
		meta.Labels = map[string]string{}
	}
	meta.Labels[berthv1alpha1.LabelOrg] = t.Org.Name

	if t.Class == berthv1alpha1.ClassBuild {
		// Before the defaults, so that the injected containers get them.
		injectBlob(meta, spec, t)
	}
	applyResourceDefaults(spec, t)
	if t.Class == berthv1alpha1.ClassBuild {
		addScratch(spec, t.Org)
		addBuildCache(spec, t.Org)
		setAnnotation(meta, AnnotationSafeToEvict, "false")
		setAnnotation(meta, AnnotationDoNotDisrupt, "true")
	}
	harden(spec)
	place(spec, t)
	markCharged(meta, spec, t)
	// berth decides the priority of its classes: whatever the Pod named is
	// replaced (a workspace must not preempt as system-cluster-critical).
	// Without berth's PriorityClasses, validation denies a named one.
	if pc := t.PriorityClass; pc != nil {
		spec.PriorityClassName = pc.Name
		spec.Priority = ptr.To(pc.Value)
		if pc.PreemptionPolicy != nil {
			spec.PreemptionPolicy = ptr.To(*pc.PreemptionPolicy)
		}
	}
}

// markCharged sets AnnotationQuota on a Pod its org limits (a workspace, or
// any Pod with GPUs, builds included), and removes whatever the user wrote
// otherwise. The validating webhook is called only for marked Pods' creates.
func markCharged(meta *metav1.ObjectMeta, spec *corev1.PodSpec, t Target) {
	if quota.Limited(t.Org, t.Class, requests.GPUs(spec)) {
		setAnnotation(meta, berthv1alpha1.AnnotationQuota, berthv1alpha1.QuotaCharged)
		return
	}
	delete(meta.Annotations, berthv1alpha1.AnnotationQuota)
}

func setAnnotation(meta *metav1.ObjectMeta, k, v string) {
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	meta.Annotations[k] = v
}

// managed are the resources berth defaults and caps per container.
var managed = []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage}

// applyResourceDefaults gives containers the class defaults for resources
// they leave unset (the class maximum when the org sets no default), and a
// limit of the class maximum where they set only a request. Inference
// containers that ask for no GPU get the default GPUs.
func applyResourceDefaults(spec *corev1.PodSpec, t Target) {
	policy := t.Org.Spec.Classes.Policy(t.Class)
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			c := &cs[i]
			for _, name := range managed {
				def, max := amount(policy.Default, name), amount(policy.Max, name)
				_, hasReq := c.Resources.Requests[name]
				_, hasLim := c.Resources.Limits[name]
				switch {
				case !hasReq && !hasLim && def != nil:
					setResource(&c.Resources.Requests, name, *def)
					setResource(&c.Resources.Limits, name, *def)
				case !hasReq && !hasLim && max != nil:
					// A max without a default still bounds the container.
					setResource(&c.Resources.Requests, name, *max)
					setResource(&c.Resources.Limits, name, *max)
				case hasReq && !hasLim && max != nil:
					setResource(&c.Resources.Limits, name, *max)
				}
			}
		}
	}
	if t.Class == berthv1alpha1.ClassInference && requests.GPUs(spec) == 0 && policy.Default != nil && policy.Default.GPUs != nil && *policy.Default.GPUs > 0 && len(spec.Containers) > 0 {
		q := *resource.NewQuantity(int64(*policy.Default.GPUs), resource.DecimalSI)
		setResource(&spec.Containers[0].Resources.Requests, placement.GPUResource, q)
		setResource(&spec.Containers[0].Resources.Limits, placement.GPUResource, q)
	}
}

// amount returns a resource of a policy's Resources, nil when unset.
func amount(r *berthv1alpha1.Resources, name corev1.ResourceName) *resource.Quantity {
	if r == nil {
		return nil
	}
	switch name {
	case corev1.ResourceCPU:
		return r.CPU
	case corev1.ResourceMemory:
		return r.Memory
	case corev1.ResourceEphemeralStorage:
		return r.EphemeralStorage
	case placement.GPUResource:
		if r.GPUs == nil {
			return nil
		}
		return resource.NewQuantity(int64(*r.GPUs), resource.DecimalSI)
	}
	return nil
}

func setResource(l *corev1.ResourceList, name corev1.ResourceName, q resource.Quantity) {
	if *l == nil {
		*l = corev1.ResourceList{}
	}
	(*l)[name] = q.DeepCopy()
}

// addScratch gives a build its /workspace emptyDir on the node's disk, sized
// from the Organization, and the matching ephemeral-storage request and
// limit on its first container. The request is never below the org's
// scratch request: schedulers and autoscalers fit builds on a node's disk
// by their requests, so a tenant asking for less could pack builds past
// what the disk holds and press on other tenants' Pods there.
func addScratch(spec *corev1.PodSpec, org *berthv1alpha1.Organization) {
	limit := org.Spec.ScratchLimit()
	// Never above what the build class allows: a scratch size the user did
	// not choose must not get their build denied.
	if m := amount(org.Spec.Classes.Build.Max, corev1.ResourceEphemeralStorage); m != nil && m.Cmp(limit) < 0 {
		limit = *m
	}
	request := org.Spec.ScratchRequest()
	if request.Cmp(limit) > 0 {
		request = limit
	}
	if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == ScratchVolume }) {
		spec.Volumes = append(spec.Volumes, corev1.Volume{
			Name:         ScratchVolume,
			VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &limit}},
		})
	}
	mountAll(spec, corev1.VolumeMount{Name: ScratchVolume, MountPath: ScratchMountPath})
	if len(spec.Containers) > 0 {
		c := &spec.Containers[0]
		if req, ok := c.Resources.Requests[corev1.ResourceEphemeralStorage]; !ok || req.Cmp(request) < 0 {
			setResource(&c.Resources.Requests, corev1.ResourceEphemeralStorage, request)
		}
		req := c.Resources.Requests[corev1.ResourceEphemeralStorage]
		if lim, ok := c.Resources.Limits[corev1.ResourceEphemeralStorage]; !ok {
			l := limit
			if req.Cmp(l) > 0 {
				l = req // a limit below the request is invalid
			}
			setResource(&c.Resources.Limits, corev1.ResourceEphemeralStorage, l)
		} else if lim.Cmp(req) < 0 {
			setResource(&c.Resources.Limits, corev1.ResourceEphemeralStorage, req)
		}
	}
}

// addBuildCache mounts the org's build-cache PVC at /cache and points Maven
// and Gradle at it.
func addBuildCache(spec *corev1.PodSpec, org *berthv1alpha1.Organization) {
	claim := org.Spec.BuildCacheClaimName
	if claim == "" {
		return
	}
	if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == CacheVolume }) {
		spec.Volumes = append(spec.Volumes, corev1.Volume{
			Name:         CacheVolume,
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}},
		})
	}
	mountAll(spec, corev1.VolumeMount{Name: CacheVolume, MountPath: CacheMountPath})
	for i := range spec.Containers {
		c := &spec.Containers[i]
		for _, e := range cacheEnv {
			if !slices.ContainsFunc(c.Env, func(x corev1.EnvVar) bool { return x.Name == e.Name }) {
				c.Env = append(c.Env, e)
			}
		}
	}
}

// mountAll mounts m into every container that has nothing at its path yet.
func mountAll(spec *corev1.PodSpec, m corev1.VolumeMount) {
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			c := &cs[i]
			if !slices.ContainsFunc(c.VolumeMounts, func(x corev1.VolumeMount) bool { return x.MountPath == m.MountPath }) {
				c.VolumeMounts = append(c.VolumeMounts, m)
			}
		}
	}
}

// harden sets, where the Pod leaves them unset, the security settings Pod
// Security "restricted" asks for. What the Pod sets explicitly is kept; the
// validating webhook denies what is unsafe.
func harden(spec *corev1.PodSpec) {
	if spec.SecurityContext == nil {
		spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	psc := spec.SecurityContext
	if psc.RunAsNonRoot == nil {
		psc.RunAsNonRoot = ptr.To(true)
	}
	if psc.RunAsUser == nil {
		psc.RunAsUser = ptr.To(NonRootID)
	}
	if psc.FSGroup == nil {
		psc.FSGroup = ptr.To(NonRootID)
	}
	if psc.SeccompProfile == nil {
		psc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	}
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			hardenContainer(&cs[i])
		}
	}
}

func hardenContainer(c *corev1.Container) {
	if c.SecurityContext == nil {
		c.SecurityContext = &corev1.SecurityContext{}
	}
	sc := c.SecurityContext
	if sc.RunAsNonRoot == nil {
		sc.RunAsNonRoot = ptr.To(true)
	}
	// The API server rejects allowPrivilegeEscalation: false next to
	// privileged or CAP_SYS_ADMIN with a message about our change; leave it
	// unset there, and let validation deny the container in plain words.
	if sc.AllowPrivilegeEscalation == nil && !ptr.Deref(sc.Privileged, false) && !addsSysAdmin(sc) {
		sc.AllowPrivilegeEscalation = ptr.To(false)
	}
	if sc.SeccompProfile == nil {
		sc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	}
	if sc.Capabilities == nil {
		sc.Capabilities = &corev1.Capabilities{}
	}
	if !slices.Contains(sc.Capabilities.Drop, "ALL") {
		sc.Capabilities.Drop = append(sc.Capabilities.Drop, "ALL")
	}
}

func addsSysAdmin(sc *corev1.SecurityContext) bool {
	return sc.Capabilities != nil && (slices.Contains(sc.Capabilities.Add, "SYS_ADMIN") || slices.Contains(sc.Capabilities.Add, "CAP_SYS_ADMIN"))
}

// place writes placement into fields the cluster-autoscaler and Karpenter
// read: schedulerName, nodeAffinity and tolerations.
func place(spec *corev1.PodSpec, t Target) {
	if t.Config.SchedulerName != "" && (spec.SchedulerName == "" || spec.SchedulerName == corev1.DefaultSchedulerName) {
		spec.SchedulerName = t.Config.SchedulerName
	}
	keys := t.Config.Keys
	if t.Class == berthv1alpha1.ClassInference {
		requireNodes(spec, keys.GPU.Requirement(false))
	} else {
		if t.Class == berthv1alpha1.ClassBuild {
			requireNodes(spec, keys.LocalSSD.Requirement(false))
		}
		switch t.Org.Spec.SpotPolicyOrDefault() {
		case berthv1alpha1.SpotOnly:
			requireNodes(spec, keys.Spot.Requirement(false))
		case berthv1alpha1.PreferSpot:
			preferNodes(spec, 100, keys.Spot.Requirement(false))
		case berthv1alpha1.OnDemand:
			requireNodes(spec, keys.Spot.Requirement(true))
		}
	}
	for _, tol := range tolerations(t) {
		tolerate(spec, tol)
	}
	if t.Class == berthv1alpha1.ClassWorkspace && t.Config.WorkspaceNodeLossSeconds > 0 {
		shortenNodeLoss(spec, t.Config.WorkspaceNodeLossSeconds)
	}
}

// shortenNodeLoss bounds how long a Pod stays on a not-ready or
// unreachable node: a workspace on a dead spot node is evicted after
// seconds, not the API server's default 5 minutes, and berth starts it
// elsewhere. A shorter toleration the Pod already has is kept.
func shortenNodeLoss(spec *corev1.PodSpec, seconds int64) {
	for _, key := range []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable} {
		found := false
		for i := range spec.Tolerations {
			tol := &spec.Tolerations[i]
			if tol.Key != key || tol.Effect != corev1.TaintEffectNoExecute {
				continue
			}
			found = true
			if tol.TolerationSeconds == nil || *tol.TolerationSeconds > seconds {
				tol.TolerationSeconds = ptr.To(seconds)
			}
		}
		if !found {
			spec.Tolerations = append(spec.Tolerations, corev1.Toleration{
				Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To(seconds),
			})
		}
	}
}

// tolerations are the tolerations berth writes for a class and org, and
// the only ones it admits besides the API server's defaults.
func tolerations(t Target) []corev1.Toleration {
	keys := t.Config.Keys
	switch {
	case t.Class == berthv1alpha1.ClassInference && keys.GPUTaint != nil:
		return []corev1.Toleration{placement.Toleration(keys.GPUTaint)}
	case t.Class != berthv1alpha1.ClassInference && keys.SpotTaint != nil && t.Org.Spec.SpotPolicyOrDefault() != berthv1alpha1.OnDemand:
		return []corev1.Toleration{placement.Toleration(keys.SpotTaint)}
	}
	return nil
}

// requireNodes adds r to every required node selector term (they are ORed,
// so r must hold in each), or makes a term of it.
func requireNodes(spec *corev1.PodSpec, r corev1.NodeSelectorRequirement) {
	na := nodeAffinity(spec)
	if na.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		na.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{}
	}
	ns := na.RequiredDuringSchedulingIgnoredDuringExecution
	if len(ns.NodeSelectorTerms) == 0 {
		ns.NodeSelectorTerms = []corev1.NodeSelectorTerm{{}}
	}
	for i := range ns.NodeSelectorTerms {
		term := &ns.NodeSelectorTerms[i]
		if !slices.ContainsFunc(term.MatchExpressions, func(x corev1.NodeSelectorRequirement) bool { return equality.Semantic.DeepEqual(x, r) }) {
			term.MatchExpressions = append(term.MatchExpressions, r)
		}
	}
}

// preferNodes adds a preferred term of r with weight w, once.
func preferNodes(spec *corev1.PodSpec, w int32, r corev1.NodeSelectorRequirement) {
	na := nodeAffinity(spec)
	term := corev1.PreferredSchedulingTerm{Weight: w, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{r}}}
	if !slices.ContainsFunc(na.PreferredDuringSchedulingIgnoredDuringExecution, func(x corev1.PreferredSchedulingTerm) bool {
		return equality.Semantic.DeepEqual(x, term)
	}) {
		na.PreferredDuringSchedulingIgnoredDuringExecution = append(na.PreferredDuringSchedulingIgnoredDuringExecution, term)
	}
}

func nodeAffinity(spec *corev1.PodSpec) *corev1.NodeAffinity {
	if spec.Affinity == nil {
		spec.Affinity = &corev1.Affinity{}
	}
	if spec.Affinity.NodeAffinity == nil {
		spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	return spec.Affinity.NodeAffinity
}

func tolerate(spec *corev1.PodSpec, t corev1.Toleration) {
	if !slices.ContainsFunc(spec.Tolerations, func(x corev1.Toleration) bool { return equality.Semantic.DeepEqual(x, t) }) {
		spec.Tolerations = append(spec.Tolerations, t)
	}
}
