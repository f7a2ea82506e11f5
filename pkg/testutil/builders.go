package testutil

import (
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// DefaultImage is the image fixture containers run; kwok never pulls it.
const DefaultImage = "registry.k8s.io/pause:3.10"

// PodBuilder builds a Pod.
type PodBuilder struct{ pod corev1.Pod }

// Pod starts a Pod with one container named "main" running DefaultImage.
func Pod(name string) *PodBuilder {
	return &PodBuilder{pod: corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "main", Image: DefaultImage}},
		},
	}}
}

// Namespace sets the Pod's namespace.
func (b *PodBuilder) Namespace(ns string) *PodBuilder { b.pod.Namespace = ns; return b }

// Label sets one label.
func (b *PodBuilder) Label(k, v string) *PodBuilder {
	setLabel(&b.pod.ObjectMeta, k, v)
	return b
}

// Annotation sets one annotation.
func (b *PodBuilder) Annotation(k, v string) *PodBuilder {
	if b.pod.Annotations == nil {
		b.pod.Annotations = map[string]string{}
	}
	b.pod.Annotations[k] = v
	return b
}

// Class sets the berth.dev/class label.
func (b *PodBuilder) Class(c berthv1alpha1.Class) *PodBuilder {
	return b.Label(berthv1alpha1.LabelClass, string(c))
}

// User sets the berth.dev/user label.
func (b *PodBuilder) User(u string) *PodBuilder { return b.Label(berthv1alpha1.LabelUser, u) }

// Workspace sets the berth.dev/workspace label.
func (b *PodBuilder) Workspace(id string) *PodBuilder {
	return b.Label(berthv1alpha1.LabelWorkspace, id)
}

// Project sets the berth.dev/project label.
func (b *PodBuilder) Project(id string) *PodBuilder {
	return b.Label(berthv1alpha1.LabelProject, id)
}

// Resource sets a request and the same limit on the first container.
func (b *PodBuilder) Resource(name corev1.ResourceName, q string) *PodBuilder {
	setRequest(&b.pod.Spec.Containers[0], name, q)
	return b
}

// Request sets only a request (no limit) on the first container.
func (b *PodBuilder) Request(name corev1.ResourceName, q string) *PodBuilder {
	c := &b.pod.Spec.Containers[0]
	if c.Resources.Requests == nil {
		c.Resources.Requests = corev1.ResourceList{}
	}
	c.Resources.Requests[name] = resource.MustParse(q)
	return b
}

// InitContainer appends an init container.
func (b *PodBuilder) InitContainer(c corev1.Container) *PodBuilder {
	b.pod.Spec.InitContainers = append(b.pod.Spec.InitContainers, c)
	return b
}

// Toleration appends a toleration.
func (b *PodBuilder) Toleration(t corev1.Toleration) *PodBuilder {
	b.pod.Spec.Tolerations = append(b.pod.Spec.Tolerations, t)
	return b
}

// RequiredNodeTerms sets the required node affinity to terms, which are
// ORed.
func (b *PodBuilder) RequiredNodeTerms(terms ...corev1.NodeSelectorTerm) *PodBuilder {
	if b.pod.Spec.Affinity == nil {
		b.pod.Spec.Affinity = &corev1.Affinity{}
	}
	if b.pod.Spec.Affinity.NodeAffinity == nil {
		b.pod.Spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	b.pod.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{NodeSelectorTerms: terms}
	return b
}

// Command sets the first container's command.
func (b *PodBuilder) Command(cmd ...string) *PodBuilder {
	b.pod.Spec.Containers[0].Command = cmd
	return b
}

// Container appends a container.
func (b *PodBuilder) Container(c corev1.Container) *PodBuilder {
	b.pod.Spec.Containers = append(b.pod.Spec.Containers, c)
	return b
}

// NodeName binds the Pod to a node, bypassing the scheduler.
func (b *PodBuilder) NodeName(n string) *PodBuilder { b.pod.Spec.NodeName = n; return b }

// SchedulerName sets the Pod's scheduler.
func (b *PodBuilder) SchedulerName(n string) *PodBuilder {
	b.pod.Spec.SchedulerName = n
	return b
}

// Obj returns the built Pod.
func (b *PodBuilder) Obj() *corev1.Pod { return b.pod.DeepCopy() }

// JobBuilder builds a Job.
type JobBuilder struct{ job batchv1.Job }

// Job starts a Job whose pod template has one container named "main" and
// restartPolicy Never.
func Job(name string) *JobBuilder {
	return &JobBuilder{job: batchv1.Job{
		TypeMeta:   metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template: corev1.PodTemplateSpec{
				Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever,
					Containers:    []corev1.Container{{Name: "main", Image: DefaultImage}},
				},
			},
		},
	}}
}

// Namespace sets the Job's namespace.
func (b *JobBuilder) Namespace(ns string) *JobBuilder { b.job.Namespace = ns; return b }

// Label sets one label on the Job and on its pod template.
func (b *JobBuilder) Label(k, v string) *JobBuilder {
	setLabel(&b.job.ObjectMeta, k, v)
	setLabel(&b.job.Spec.Template.ObjectMeta, k, v)
	return b
}

// Class sets the berth.dev/class label on the Job and its pod template.
func (b *JobBuilder) Class(c berthv1alpha1.Class) *JobBuilder {
	return b.Label(berthv1alpha1.LabelClass, string(c))
}

// User sets the berth.dev/user label.
func (b *JobBuilder) User(u string) *JobBuilder { return b.Label(berthv1alpha1.LabelUser, u) }

// Project sets the berth.dev/project label.
func (b *JobBuilder) Project(id string) *JobBuilder {
	return b.Label(berthv1alpha1.LabelProject, id)
}

// Suspend sets spec.suspend.
func (b *JobBuilder) Suspend(s bool) *JobBuilder { b.job.Spec.Suspend = ptr.To(s); return b }

// Resource sets a request and the same limit on the first container.
func (b *JobBuilder) Resource(name corev1.ResourceName, q string) *JobBuilder {
	setRequest(&b.job.Spec.Template.Spec.Containers[0], name, q)
	return b
}

// Annotation sets one annotation on the Job.
func (b *JobBuilder) Annotation(k, v string) *JobBuilder {
	if b.job.Annotations == nil {
		b.job.Annotations = map[string]string{}
	}
	b.job.Annotations[k] = v
	return b
}

// Created sets the Job's creationTimestamp.
func (b *JobBuilder) Created(t time.Time) *JobBuilder {
	b.job.CreationTimestamp = metav1.NewTime(t)
	return b
}

// Condition adds a status condition of type c with status s, such as
// (JobComplete, ConditionTrue) for a finished Job.
func (b *JobBuilder) Condition(c batchv1.JobConditionType, s corev1.ConditionStatus) *JobBuilder {
	b.job.Status.Conditions = append(b.job.Status.Conditions, batchv1.JobCondition{Type: c, Status: s})
	return b
}

// Deleting sets the Job's deletionTimestamp, as the API server does for a
// Job being deleted.
func (b *JobBuilder) Deleting(t time.Time) *JobBuilder {
	b.job.DeletionTimestamp = ptr.To(metav1.NewTime(t))
	return b
}

// Command sets the first container's command.
func (b *JobBuilder) Command(cmd ...string) *JobBuilder {
	b.job.Spec.Template.Spec.Containers[0].Command = cmd
	return b
}

// Obj returns the built Job.
func (b *JobBuilder) Obj() *batchv1.Job { return b.job.DeepCopy() }

// NamespaceBuilder builds a Namespace.
type NamespaceBuilder struct{ ns corev1.Namespace }

// Namespace starts a Namespace.
func Namespace(name string) *NamespaceBuilder {
	return &NamespaceBuilder{ns: corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
	}}
}

// Org sets the trusted berth.dev/org label.
func (b *NamespaceBuilder) Org(org string) *NamespaceBuilder {
	return b.Label(berthv1alpha1.LabelOrg, org)
}

// Label sets one label.
func (b *NamespaceBuilder) Label(k, v string) *NamespaceBuilder {
	setLabel(&b.ns.ObjectMeta, k, v)
	return b
}

// Obj returns the built Namespace.
func (b *NamespaceBuilder) Obj() *corev1.Namespace { return b.ns.DeepCopy() }

// OrgBuilder builds an Organization.
type OrgBuilder struct{ org berthv1alpha1.Organization }

// Org starts an Organization with an empty spec.
func Org(name string) *OrgBuilder {
	return &OrgBuilder{org: berthv1alpha1.Organization{
		TypeMeta:   metav1.TypeMeta{APIVersion: berthv1alpha1.SchemeGroupVersion.String(), Kind: "Organization"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
	}}
}

// MaxWorkspaces sets spec.maxWorkspaces.
func (b *OrgBuilder) MaxWorkspaces(n int32) *OrgBuilder {
	b.org.Spec.MaxWorkspaces = ptr.To(n)
	return b
}

// MaxConcurrentBuilds sets spec.maxConcurrentBuilds.
func (b *OrgBuilder) MaxConcurrentBuilds(n int32) *OrgBuilder {
	b.org.Spec.MaxConcurrentBuilds = ptr.To(n)
	return b
}

// MaxGPUs sets spec.maxGPUs.
func (b *OrgBuilder) MaxGPUs(n int32) *OrgBuilder { b.org.Spec.MaxGPUs = ptr.To(n); return b }

// SpotPolicy sets spec.spotPolicy.
func (b *OrgBuilder) SpotPolicy(p berthv1alpha1.SpotPolicy) *OrgBuilder {
	b.org.Spec.SpotPolicy = p
	return b
}

// IdleTimeout sets spec.idleTimeout.
func (b *OrgBuilder) IdleTimeout(d metav1.Duration) *OrgBuilder {
	b.org.Spec.IdleTimeout = &d
	return b
}

// ClassDefault sets a class's default cpu and memory.
func (b *OrgBuilder) ClassDefault(c berthv1alpha1.Class, cpu, memory string) *OrgBuilder {
	b.classPolicy(c).Default = resources(cpu, memory)
	return b
}

// ClassMax sets a class's maximum cpu and memory.
func (b *OrgBuilder) ClassMax(c berthv1alpha1.Class, cpu, memory string) *OrgBuilder {
	b.classPolicy(c).Max = resources(cpu, memory)
	return b
}

// ClassDefaultGPUs sets a class's default GPUs. Call it after ClassDefault,
// which replaces the whole default.
func (b *OrgBuilder) ClassDefaultGPUs(c berthv1alpha1.Class, n int32) *OrgBuilder {
	p := b.classPolicy(c)
	if p.Default == nil {
		p.Default = &berthv1alpha1.Resources{}
	}
	p.Default.GPUs = ptr.To(n)
	return b
}

// ClassMaxGPUs sets a class's maximum GPUs. Call it after ClassMax, which
// replaces the whole maximum.
func (b *OrgBuilder) ClassMaxGPUs(c berthv1alpha1.Class, n int32) *OrgBuilder {
	p := b.classPolicy(c)
	if p.Max == nil {
		p.Max = &berthv1alpha1.Resources{}
	}
	p.Max.GPUs = ptr.To(n)
	return b
}

// BuildScratch sets spec.buildScratch's request and limit; an empty string
// leaves that one unset.
func (b *OrgBuilder) BuildScratch(request, limit string) *OrgBuilder {
	s := &berthv1alpha1.ScratchPolicy{}
	if request != "" {
		s.Request = ptr.To(resource.MustParse(request))
	}
	if limit != "" {
		s.Limit = ptr.To(resource.MustParse(limit))
	}
	b.org.Spec.BuildScratch = s
	return b
}

// BuildCacheClaim sets spec.buildCacheClaimName.
func (b *OrgBuilder) BuildCacheClaim(name string) *OrgBuilder {
	b.org.Spec.BuildCacheClaimName = name
	return b
}

// Blob sets the blob settings.
func (b *OrgBuilder) Blob(s berthv1alpha1.BlobSettings) *OrgBuilder {
	b.org.Spec.Blob = &s
	return b
}

// Obj returns the built Organization.
func (b *OrgBuilder) Obj() *berthv1alpha1.Organization { return b.org.DeepCopy() }

func (b *OrgBuilder) classPolicy(c berthv1alpha1.Class) *berthv1alpha1.ClassPolicy {
	switch c {
	case berthv1alpha1.ClassBuild:
		return &b.org.Spec.Classes.Build
	case berthv1alpha1.ClassInference:
		return &b.org.Spec.Classes.Inference
	default:
		return &b.org.Spec.Classes.Workspace
	}
}

func resources(cpu, memory string) *berthv1alpha1.Resources {
	r := &berthv1alpha1.Resources{}
	if cpu != "" {
		r.CPU = ptr.To(resource.MustParse(cpu))
	}
	if memory != "" {
		r.Memory = ptr.To(resource.MustParse(memory))
	}
	return r
}

func setLabel(m *metav1.ObjectMeta, k, v string) {
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	m.Labels[k] = v
}

func setRequest(c *corev1.Container, name corev1.ResourceName, q string) {
	if c.Resources.Requests == nil {
		c.Resources.Requests = corev1.ResourceList{}
	}
	if c.Resources.Limits == nil {
		c.Resources.Limits = corev1.ResourceList{}
	}
	c.Resources.Requests[name] = resource.MustParse(q)
	c.Resources.Limits[name] = resource.MustParse(q)
}
