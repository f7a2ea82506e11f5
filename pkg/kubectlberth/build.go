package kubectlberth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/blob"
)

// Client is what the commands talk to, as the developer: the API server
// and berth-manager's project and workspace APIs.
type Client struct {
	Kube kubernetes.Interface
	// Berth reads berth's kinds (Workspaces, Organizations).
	Berth      client.Client
	Manager    *http.Client
	ManagerURL string
	// Meter and MeterURL reach berth-meter's API (usage, audit check).
	Meter     *http.Client
	MeterURL  string
	Namespace string
	Out       io.Writer // what the developer asked for: the log, a URL
	ErrOut    io.Writer // progress and notes
	// PollInterval is how often a followed build is looked at; 0 means 1s.
	PollInterval time.Duration
}

// store reaches one project's blobs through the project API.
func (c *Client) store(project string) *blob.GrantStore {
	return blob.NewGrantStore(&blob.ProjectClient{
		ManagerURL: c.ManagerURL, Namespace: c.Namespace, Project: project, HTTP: c.Manager,
	}, blob.StoreOptions{})
}

// BuildOptions are kubectl berth build's.
type BuildOptions struct {
	// Dir is the folder zipped as the project's sources.
	Dir     string
	Project string
	// Image runs the build; it overrides the Job file's.
	Image string
	// Command is the build command; it overrides the Job file's.
	Command []string
	// JobFile is a Job manifest to start from (resources, a service
	// account, env); berth's labels, the image and the command are set on
	// it.
	JobFile string
	// Output is where result.zip is written; empty prints a read URL.
	Output string
	// Detach returns once the Job is admitted.
	Detach bool
}

// Build puts Dir up as the project's sources, creates the build Job,
// follows it to the end, and brings the result back. It returns the Job,
// as far as it got.
func (c *Client) Build(ctx context.Context, o BuildOptions) (*batchv1.Job, error) {
	start := time.Now()
	job, err := o.job(c.Namespace)
	if err != nil {
		return nil, err
	}
	info, err := os.Stat(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("the folder to build: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("%s is not a folder: kubectl berth build zips a folder, as in kubectl berth build . --project %s -- make", o.Dir, o.Project)
	}
	keep, err := SourceFilter(o.Dir)
	if err != nil {
		return nil, err
	}
	// Admission decides on the Job before the sources replace the
	// project's: a Job berth or the API server refuses leaves them as
	// they were.
	if _, err := c.Kube.BatchV1().Jobs(c.Namespace).Create(ctx, job, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		return nil, fmt.Errorf("the build Job of project %q in namespace %q would be refused: %w", o.Project, c.Namespace, err)
	}
	store := c.store(o.Project)
	size, err := blob.UploadTree(ctx, store, blob.DefaultUploadsContainer, blob.SourceName(o.Project), o.Dir, "", keep, blob.DefaultBackoff())
	if err != nil {
		return nil, fmt.Errorf("put the sources of project %q: %w", o.Project, err)
	}
	up := time.Since(start)
	job, err = c.Kube.BatchV1().Jobs(c.Namespace).Create(ctx, job, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create the build Job of project %q in namespace %q: %w", o.Project, c.Namespace, err)
	}
	fmt.Fprintf(c.ErrOut, "job.batch/%s created: sources %s up in %s, Job admitted %s after start\n",
		job.Name, humanBytes(size), up.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if o.Detach {
		fmt.Fprintf(c.ErrOut, "follow it with kubectl get job %s; then kubectl berth logs %s and kubectl berth result %s\n", job.Name, job.Name, job.Name)
		return job, nil
	}
	job, err = c.follow(ctx, job)
	if err != nil {
		return job, err
	}
	return job, c.Result(ctx, job.Name, o.Output)
}

// job is the build Job to create: the Job file's, or a plain one, with
// berth's labels on the Job and its Pods, the image and the command.
func (o BuildOptions) job(ns string) (*batchv1.Job, error) {
	if err := blob.ValidateProject(o.Project); err != nil {
		return nil, fmt.Errorf("--project: %w", err)
	}
	job := &batchv1.Job{Spec: batchv1.JobSpec{
		BackoffLimit: ptr.To[int32](0),
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "build"}},
		}},
	}}
	if o.JobFile != "" {
		b, err := os.ReadFile(o.JobFile)
		if err != nil {
			return nil, fmt.Errorf("--job-file: %w", err)
		}
		job = &batchv1.Job{}
		if err := yaml.UnmarshalStrict(b, job); err != nil {
			return nil, fmt.Errorf("--job-file %s is not a Job: %w", o.JobFile, err)
		}
		if job.Kind != "" && job.Kind != "Job" {
			return nil, fmt.Errorf("--job-file %s holds a %s; it must hold one batch/v1 Job", o.JobFile, job.Kind)
		}
		if len(job.Spec.Template.Spec.Containers) == 0 {
			return nil, fmt.Errorf("--job-file %s: spec.template.spec.containers is empty; the first container runs the build", o.JobFile)
		}
	}
	if job.Name == "" && job.GenerateName == "" {
		job.GenerateName = o.Project + "-"
	}
	job.Namespace = ns
	for _, m := range []*metav1.ObjectMeta{&job.ObjectMeta, &job.Spec.Template.ObjectMeta} {
		if m.Labels == nil {
			m.Labels = map[string]string{}
		}
		m.Labels[berthv1alpha1.LabelClass] = string(berthv1alpha1.ClassBuild)
		m.Labels[berthv1alpha1.LabelProject] = o.Project
	}
	build := &job.Spec.Template.Spec.Containers[0]
	if o.Image != "" {
		build.Image = o.Image
	}
	if build.Image == "" {
		return nil, errors.New("the build has no image: pass --image (such as --image golang:1.26), or set it in --job-file")
	}
	if len(o.Command) > 0 {
		build.Command, build.Args = o.Command, nil
	}
	if len(build.Command) == 0 {
		return nil, fmt.Errorf("the build has no command: name it after --, as in kubectl berth build %s --project %s -- make", o.Dir, o.Project)
	}
	return job, nil
}

// follow waits for the Job to finish, saying where it is: queued for a
// slot of the org, running (with its log, when the API server can stream
// it), and how it ended. A failed build is an error, with its log.
func (c *Client) follow(ctx context.Context, job *batchv1.Job) (*batchv1.Job, error) {
	interval := c.PollInterval
	if interval <= 0 {
		interval = time.Second
	}
	jobs := c.Kube.BatchV1().Jobs(c.Namespace)
	state, streamed := "", make(chan bool, 1)
	streaming := false
	for {
		cur, err := jobs.Get(ctx, job.Name, metav1.GetOptions{})
		if err != nil {
			return job, fmt.Errorf("follow build %s: %w", job.Name, err)
		}
		job = cur
		if done, failed := finished(job); done {
			logged := streaming && waitStream(ctx, streamed)
			if failed == nil {
				fmt.Fprintf(c.ErrOut, "build %s succeeded\n", job.Name)
				return job, nil
			}
			if !logged {
				fmt.Fprintf(c.ErrOut, "build %s failed; its log:\n", job.Name)
				if err := c.Logs(ctx, job.Name); err != nil {
					fmt.Fprintf(c.ErrOut, "(no log: %v)\n", err)
				}
			}
			return job, fmt.Errorf("build %s failed: %s", job.Name, failed)
		}
		if ptr.Deref(job.Spec.Suspend, false) {
			if state != "queued" {
				state = "queued"
				ahead, err := c.ahead(ctx, job)
				if err != nil {
					return job, err
				}
				fmt.Fprintf(c.ErrOut, "build %s is queued for a build slot of your org: %d of this namespace's builds are ahead of it\n", job.Name, ahead)
			}
		} else if !streaming {
			pod, err := c.runningPod(ctx, job)
			if err != nil {
				return job, err
			}
			if pod != nil {
				fmt.Fprintf(c.ErrOut, "build %s is running on node %q\n", job.Name, pod.Spec.NodeName)
				streaming = true
				go func() { streamed <- c.stream(ctx, pod, job.Spec.Template.Spec.Containers[0].Name) }()
			} else if state != "starting" {
				state = "starting"
				fmt.Fprintf(c.ErrOut, "build %s is starting\n", job.Name)
			}
		}
		select {
		case <-ctx.Done():
			return job, fmt.Errorf("follow build %s: %w; it goes on: kubectl berth logs %s when it ends", job.Name, ctx.Err(), job.Name)
		case <-time.After(interval):
		}
	}
}

// finished says whether the Job ended, and why it failed if it did.
func finished(job *batchv1.Job) (bool, error) {
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return true, nil
		case batchv1.JobFailed:
			return true, fmt.Errorf("%s: %s", c.Reason, c.Message)
		}
	}
	return false, nil
}

// ahead counts the namespace's queued builds created before job: the ones
// the developer can see (the org's queue spans its other namespaces too).
func (c *Client) ahead(ctx context.Context, job *batchv1.Job) (int, error) {
	list, err := c.Kube.BatchV1().Jobs(c.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: berthv1alpha1.LabelClass + "=" + string(berthv1alpha1.ClassBuild),
	})
	if err != nil {
		return 0, fmt.Errorf("list the queued builds of namespace %q: %w", c.Namespace, err)
	}
	n := 0
	for _, j := range list.Items {
		if ptr.Deref(j.Spec.Suspend, false) && j.CreationTimestamp.Before(&job.CreationTimestamp) {
			n++
		}
	}
	return n, nil
}

// runningPod is the Job's Pod once its build container runs, or nil.
func (c *Client) runningPod(ctx context.Context, job *batchv1.Job) (*corev1.Pod, error) {
	pods, err := c.Kube.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: batchv1.JobNameLabel + "=" + job.Name,
	})
	if err != nil {
		return nil, fmt.Errorf("list the Pods of build %s: %w", job.Name, err)
	}
	for i := range pods.Items {
		if p := &pods.Items[i]; p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			return p, nil
		}
	}
	return nil, nil
}

// stream copies the build container's log as it runs, and reports whether
// it got all of it.
func (c *Client) stream(ctx context.Context, pod *corev1.Pod, container string) bool {
	rc, err := c.Kube.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: container, Follow: true}).Stream(ctx)
	if err != nil {
		fmt.Fprintf(c.ErrOut, "(the log of Pod %s cannot be followed: %v; kubectl berth logs brings it when the build ends)\n", pod.Name, err)
		return false
	}
	defer rc.Close()
	_, err = io.Copy(c.Out, rc)
	return err == nil
}

// waitStream waits a little for a log stream to drain after its Job ended.
func waitStream(ctx context.Context, streamed <-chan bool) bool {
	select {
	case ok := <-streamed:
		return ok
	case <-time.After(10 * time.Second):
		return false
	case <-ctx.Done():
		return false
	}
}

// buildJob reads a build Job and its project.
func (c *Client) buildJob(ctx context.Context, name string) (*batchv1.Job, string, error) {
	job, err := c.Kube.BatchV1().Jobs(c.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("build %s in namespace %q: %w", name, c.Namespace, err)
	}
	project := job.Labels[berthv1alpha1.LabelProject]
	if job.Labels[berthv1alpha1.LabelClass] != string(berthv1alpha1.ClassBuild) || project == "" {
		return nil, "", fmt.Errorf("job %s/%s is not a berth build: it needs the labels %s=%s and %s", c.Namespace, name,
			berthv1alpha1.LabelClass, berthv1alpha1.ClassBuild, berthv1alpha1.LabelProject)
	}
	if newer, err := c.newerBuild(ctx, job, project); err != nil {
		return nil, "", err
	} else if newer != "" {
		fmt.Fprintf(c.ErrOut, "note: project %s keeps one log and one result, its last build's; build %s is newer than %s\n", project, newer, name)
	}
	return job, project, nil
}

// newerBuild names the project's newest build in the namespace when it is
// not job.
func (c *Client) newerBuild(ctx context.Context, job *batchv1.Job, project string) (string, error) {
	list, err := c.Kube.BatchV1().Jobs(c.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: berthv1alpha1.LabelProject + "=" + project,
	})
	if err != nil {
		return "", fmt.Errorf("list the builds of project %q: %w", project, err)
	}
	sort.Slice(list.Items, func(i, j int) bool {
		return list.Items[j].CreationTimestamp.Before(&list.Items[i].CreationTimestamp)
	})
	if len(list.Items) > 0 && list.Items[0].Name != job.Name && job.CreationTimestamp.Before(&list.Items[0].CreationTimestamp) {
		return list.Items[0].Name, nil
	}
	return "", nil
}

// Logs writes the log of a finished build to Out.
func (c *Client) Logs(ctx context.Context, name string) error {
	_, project, err := c.buildJob(ctx, name)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp("", ".berth-log-*")
	if err != nil {
		return err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	if _, err := blob.DownloadTo(ctx, c.store(project), blob.DefaultProjectsContainer, blob.LogName(project), f, blob.DefaultBackoff(), blob.DefaultProgressInterval); err != nil {
		return fmt.Errorf("the log of build %s: %w", name, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err = io.Copy(c.Out, f)
	return err
}

// Result writes the result.zip of a succeeded build to output, or prints
// a read URL of it when output is empty.
func (c *Client) Result(ctx context.Context, name, output string) error {
	job, project, err := c.buildJob(ctx, name)
	if err != nil {
		return err
	}
	if done, failed := finished(job); !done || failed != nil {
		state := "has not ended"
		if failed != nil {
			state = "failed (" + failed.Error() + ")"
		}
		return fmt.Errorf("build %s %s, so it has no result.zip; kubectl berth logs %s shows its log", name, state, name)
	}
	store := c.store(project)
	if output == "" {
		g, err := (&blob.ProjectClient{ManagerURL: c.ManagerURL, Namespace: c.Namespace, Project: project, HTTP: c.Manager}).
			Grant(ctx, blob.GrantRequest{Container: blob.DefaultProjectsContainer, Name: blob.ResultName(project), Access: blob.AccessRead})
		if err != nil {
			return fmt.Errorf("the result of build %s: %w", name, err)
		}
		fmt.Fprintln(c.Out, g.URL)
		fmt.Fprintf(c.ErrOut, "a read URL of result.zip, valid until %s; -o FILE downloads it\n", g.Expiry.Local().Format(time.RFC3339))
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(output), ".berth-result-*")
	if err != nil {
		return fmt.Errorf("-o %s: %w", output, err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	n, err := blob.DownloadTo(ctx, store, blob.DefaultProjectsContainer, blob.ResultName(project), f, blob.DefaultBackoff(), blob.DefaultProgressInterval)
	if err != nil {
		return fmt.Errorf("the result of build %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), output); err != nil {
		return fmt.Errorf("-o %s: %w", output, err)
	}
	fmt.Fprintf(c.ErrOut, "result.zip of build %s: %s, %d bytes\n", name, output, n)
	return nil
}

// humanBytes is n in KiB below a MiB, in MiB above.
func humanBytes(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
