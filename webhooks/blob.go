package webhooks

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/blob"
)

// DefaultBlobImage is the berth-blob image injected into builds.
const DefaultBlobImage = "ghcr.io/berth-dev/berth-blob:v0.1.0"

// What the blob injection adds to a build Pod, by name, so a second pass
// recognises it.
const (
	// BlobVolume is the emptyDir berth-blob is copied into.
	BlobVolume = "berth-blob"
	// BlobDir is where BlobVolume is mounted.
	BlobDir = "/berth/bin"
	// BlobPath is the copied berth-blob the build container runs through.
	BlobPath = BlobDir + "/berth-blob"
	// BlobImageBinary is berth-blob's path in its own image.
	BlobImageBinary = "/berth-blob"
	// BlobInstallContainer copies berth-blob into BlobVolume.
	BlobInstallContainer = "berth-blob-install"
	// BlobFetchContainer fetches and unzips the sources.
	BlobFetchContainer = "berth-blob-fetch"
	// SourceDir is where the sources are unzipped, and the build
	// container's working dir unless it sets one.
	SourceDir = ScratchMountPath + "/src"
	// EnvBlobConnectionString carries the org's connection string, with
	// Config.BlobCredentialsInPods only.
	EnvBlobConnectionString = "BERTH_BLOB_CONNECTION_STRING"
	// EnvBlobManagerCA carries the PEM of berth-manager's CA.
	EnvBlobManagerCA = "BERTH_BLOB_MANAGER_CA"
	// BlobTokenVolume is the projected ServiceAccount token berth-blob
	// shows berth-manager, audience blob.TokenAudience, bound to the Pod.
	BlobTokenVolume = "berth-blob-token"
	// BlobTokenDir is where BlobTokenVolume is mounted: the token is
	// BlobTokenDir/token, blob.DefaultTokenFile.
	BlobTokenDir = "/var/run/secrets/berth.dev/blob"
	// BlobTokenSeconds is the token's life; the kubelet renews it at 80%.
	BlobTokenSeconds = 3600
)

// projectValue is a project id usable in blob names: a label value that is
// not "." or "..".
var projectValue = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)

// wantsBlob reports whether a Pod gets the blob data path: a build with a
// project, in an org with blob settings.
func wantsBlob(project string, t Target) bool {
	return t.Class == berthv1alpha1.ClassBuild && project != "" && t.Org.Spec.Blob != nil
}

// injectBlob adds berth-blob to a build: an init container that copies the
// binary into a shared emptyDir, one that fetches the sources into the
// scratch dir, and the build container's command run through
// `berth-blob run`. A build without a command is left alone; validation
// denies it.
func injectBlob(meta *metav1.ObjectMeta, spec *corev1.PodSpec, t Target) {
	project := meta.Labels[berthv1alpha1.LabelProject]
	if !wantsBlob(project, t) || !projectValue.MatchString(project) || len(spec.Containers) == 0 || len(spec.Containers[0].Command) == 0 {
		return
	}
	bs := t.Org.Spec.Blob.WithDefaults()
	if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == BlobVolume }) {
		spec.Volumes = append(spec.Volumes, corev1.Volume{
			Name:         BlobVolume,
			VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("128Mi"))}},
		})
	}
	hasInit := func(name string) bool {
		return slices.ContainsFunc(spec.InitContainers, func(c corev1.Container) bool { return c.Name == name })
	}
	if !hasInit(BlobInstallContainer) || !hasInit(BlobFetchContainer) {
		spec.InitContainers = slices.DeleteFunc(spec.InitContainers, func(c corev1.Container) bool {
			return c.Name == BlobInstallContainer || c.Name == BlobFetchContainer
		})
		spec.InitContainers = append(blobInitContainers(project, bs, t.Config), spec.InitContainers...)
	}

	main := &spec.Containers[0]
	if !isBlobRun(main.Command) {
		main.Command = append(blobArgs(BlobPath, "run", project, bs, t.Config,
			"--projects-container="+bs.ProjectsContainer, "--artifacts-container="+bs.ArtifactsContainer, "--"), main.Command...)
	}
	if main.WorkingDir == "" {
		main.WorkingDir = SourceDir
	}
	addMount(main, corev1.VolumeMount{Name: BlobVolume, MountPath: BlobDir, ReadOnly: true})
	for _, env := range blobEnv(bs, t.Config) {
		setEnv(main, env)
	}
	if !t.Config.BlobCredentialsInPods {
		// berth's token volume replaces one of the same name: its
		// audience and binding are what berth-manager trusts.
		if i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == BlobTokenVolume }); i >= 0 {
			spec.Volumes[i] = blobTokenVolume()
		} else {
			spec.Volumes = append(spec.Volumes, blobTokenVolume())
		}
		setMount(main, blobTokenMount())
	}
}

// setEnv sets env on c; berth's value wins, in place, so a second pass
// changes nothing.
func setEnv(c *corev1.Container, env corev1.EnvVar) {
	if i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == env.Name }); i >= 0 {
		c.Env[i] = env
	} else {
		c.Env = append(c.Env, env)
	}
}

// setMount mounts m into c, in place of whatever mounts its volume or its
// path.
func setMount(c *corev1.Container, m corev1.VolumeMount) {
	same := func(x corev1.VolumeMount) bool { return x.MountPath == m.MountPath || x.Name == m.Name }
	i := slices.IndexFunc(c.VolumeMounts, same)
	if i < 0 {
		c.VolumeMounts = append(c.VolumeMounts, m)
		return
	}
	c.VolumeMounts[i] = m
	c.VolumeMounts = append(c.VolumeMounts[:i+1], slices.DeleteFunc(c.VolumeMounts[i+1:], same)...)
}

// blobTokenVolume is the Pod's token for berth-manager.
func blobTokenVolume() corev1.Volume {
	return corev1.Volume{Name: BlobTokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Audience: blob.TokenAudience, ExpirationSeconds: ptr.To[int64](BlobTokenSeconds), Path: "token",
		}}},
	}}}
}

func blobTokenMount() corev1.VolumeMount {
	return corev1.VolumeMount{Name: BlobTokenVolume, MountPath: BlobTokenDir, ReadOnly: true}
}

// blobEnv is what the fetch and build containers need to reach the
// blobs: berth-manager's CA, or with BlobCredentialsInPods the org's
// connection string.
func blobEnv(bs berthv1alpha1.BlobSettings, c Config) []corev1.EnvVar {
	if c.BlobCredentialsInPods {
		if env := blobCredentialsEnv(bs); env != nil {
			return []corev1.EnvVar{*env}
		}
		return nil
	}
	if ca := managerCA.read(c.BlobManagerCAFile); len(ca) > 0 {
		return []corev1.EnvVar{{Name: EnvBlobManagerCA, Value: string(ca)}}
	}
	return nil
}

// managerCA keeps the CA file's content, read again at most every
// minute: the certificate rotator may replace it.
var managerCA caCache

type caCache struct {
	mu     sync.Mutex
	path   string
	data   []byte
	readAt time.Time
}

func (c *caCache) read(path string) []byte {
	if path == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.path != path || time.Since(c.readAt) > time.Minute {
		if b, err := os.ReadFile(path); err == nil || c.path != path {
			c.data = b
		}
		c.path, c.readAt = path, time.Now()
	}
	return c.data
}

func (c Config) blobImage() string {
	if c.BlobImage != "" {
		return c.BlobImage
	}
	return DefaultBlobImage
}

// blobArgs is a berth-blob command line with the flags every subcommand
// takes.
func blobArgs(bin, sub, project string, bs berthv1alpha1.BlobSettings, c Config, more ...string) []string {
	where := "--manager-url=" + c.BlobManagerURL
	if c.BlobCredentialsInPods {
		where = "--account-url=" + bs.AccountURL
	}
	return append([]string{bin, sub, "--project=" + project, where}, more...)
}

func blobInitContainers(project string, bs berthv1alpha1.BlobSettings, c Config) []corev1.Container {
	image := c.blobImage()
	install := corev1.Container{
		Name:            BlobInstallContainer,
		Image:           image,
		Command:         []string{BlobImageBinary, "copy-self", BlobPath},
		VolumeMounts:    []corev1.VolumeMount{{Name: BlobVolume, MountPath: BlobDir}},
		SecurityContext: blobSecurityContext(),
	}
	fetch := corev1.Container{
		Name:  BlobFetchContainer,
		Image: image,
		Command: blobArgs(BlobImageBinary, "fetch", project, bs, c,
			"--uploads-container="+bs.UploadsContainer, "--dest="+SourceDir),
		VolumeMounts:    []corev1.VolumeMount{{Name: ScratchVolume, MountPath: ScratchMountPath}},
		Env:             blobEnv(bs, c),
		SecurityContext: blobSecurityContext(),
	}
	if !c.BlobCredentialsInPods {
		fetch.VolumeMounts = append(fetch.VolumeMounts, blobTokenMount())
	}
	return []corev1.Container{install, fetch}
}

// blobSecurityContext passes Pod Security "restricted" on its own, and
// keeps berth-blob's root filesystem read-only: it writes only to its
// volumes.
func blobSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// blobCredentialsEnv is the connection string from the org's Secret; nil
// means workload identity.
func blobCredentialsEnv(bs berthv1alpha1.BlobSettings) *corev1.EnvVar {
	ref := bs.CredentialsSecret
	if ref == nil {
		return nil
	}
	key := ref.Key
	if key == "" {
		key = berthv1alpha1.DefaultCredentialsKey
	}
	return &corev1.EnvVar{Name: EnvBlobConnectionString, ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: ref.Name}, Key: key},
	}}
}

func isBlobRun(cmd []string) bool {
	return len(cmd) > 1 && cmd[0] == BlobPath && cmd[1] == "run"
}

// addMount mounts m into c unless something is mounted at its path.
func addMount(c *corev1.Container, m corev1.VolumeMount) {
	if !slices.ContainsFunc(c.VolumeMounts, func(x corev1.VolumeMount) bool { return x.MountPath == m.MountPath }) {
		c.VolumeMounts = append(c.VolumeMounts, m)
	}
}

// validateBlob denies a build that the blob data path cannot wrap.
func validateBlob(spec *corev1.PodSpec, t Target, path *field.Path) field.ErrorList {
	if !wantsBlob(t.Project, t) {
		return nil
	}
	var errs field.ErrorList
	if !projectValue.MatchString(t.Project) {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "labels").Key(berthv1alpha1.LabelProject), t.Project,
			"a project id names blob paths: use 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))
	}
	if len(spec.Containers) > 0 && len(spec.Containers[0].Command) == 0 {
		errs = append(errs, field.Required(path.Child("containers").Index(0).Child("command"), fmt.Sprintf(
			"builds of project %q run through berth-blob, which fetches the sources and delivers the results, and the image's entrypoint cannot be known at admission; set command (and args) on container %q to what the build runs, for example command: [mvn, -B, package]",
			t.Project, spec.Containers[0].Name)))
	}
	return errs
}
