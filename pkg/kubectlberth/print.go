package kubectlberth

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/yaml"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
)

// Output formats of the listing commands.
const (
	OutputTable = "table"
	OutputWide  = "wide"
	OutputJSON  = "json"
	OutputYAML  = "yaml"
)

// CheckOutput refuses an output format the commands do not print.
func CheckOutput(format string) error {
	switch format {
	case "", OutputTable, OutputWide, OutputJSON, OutputYAML:
		return nil
	}
	return fmt.Errorf("-o %q is not an output format: use table, wide, json or yaml", format)
}

// printObject writes obj, of kind gvk, as JSON or YAML.
func printObject(w io.Writer, format string, obj runtime.Object, gvk schema.GroupVersionKind) error {
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	if format == OutputYAML {
		return (&printers.YAMLPrinter{}).PrintObj(obj, w)
	}
	return (&printers.JSONPrinter{}).PrintObj(obj, w)
}

// printValue writes v, which is not a Kubernetes object, as JSON or YAML.
func printValue(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return err
	}
	if format == OutputYAML {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// table writes a header and rows, tab-aligned as kubectl prints; an empty
// cell prints as "-".
func table(w io.Writer, header []string, rows [][]string) error {
	tw := printers.GetNewTabWriter(w)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		for i := range r {
			if r[i] == "" {
				r[i] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// PrintWorkspaces writes kubectl berth ls.
func PrintWorkspaces(w io.Writer, format string, list runtime.Object, rows []WorkspaceRow) error {
	switch format {
	case OutputJSON, OutputYAML:
		return printObject(w, format, list, berthv1alpha1.SchemeGroupVersion.WithKind("WorkspaceList"))
	}
	header := []string{"NAME", "USER", "PHASE", "IDLE", "STOPPED-BY", "NODE", "POOL", "COST/H", "AGE"}
	if format == OutputWide {
		header = append(header, "POD", "MESSAGE")
	}
	var cells [][]string
	for _, r := range rows {
		c := []string{r.Name, r.User, string(r.Phase), r.Idle, string(r.StoppedBy), r.Node, r.Pool, r.Cost, r.Age}
		if format == OutputWide {
			c = append(c, r.Pod, r.Message)
		}
		cells = append(cells, c)
	}
	return table(w, header, cells)
}

// PrintQueue writes kubectl berth queue.
func PrintQueue(w io.Writer, format string, list runtime.Object, rows []QueueRow) error {
	switch format {
	case OutputJSON, OutputYAML:
		return printObject(w, format, list, batchv1.SchemeGroupVersion.WithKind("JobList"))
	}
	var cells [][]string
	for _, r := range rows {
		pos := ""
		if r.Position > 0 {
			pos = strconv.Itoa(r.Position)
		}
		cells = append(cells, []string{r.Build, r.Project, r.State, pos, r.Age})
	}
	return table(w, []string{"BUILD", "PROJECT", "STATE", "POSITION", "AGE"}, cells)
}

// PrintAnswer writes the state of a workspace after wake, stop or touch.
func PrintAnswer(w io.Writer, format string, a berthv1alpha1.WorkspaceAnswer) error {
	switch format {
	case OutputJSON, OutputYAML:
		return printValue(w, format, a)
	}
	header := []string{"NAME", "STARTED", "PHASE", "NODE"}
	c := []string{a.Name, strconv.FormatBool(a.Started), string(a.Phase), a.NodeName}
	if format == OutputWide {
		header, c = append(header, "POD", "MESSAGE"), append(c, a.PodName, a.Message)
	}
	return table(w, header, [][]string{c})
}

// PrintSlots writes a line on the org's build slots, when it knows them.
func PrintSlots(w io.Writer, slots *OrgSlots) {
	switch {
	case slots == nil:
	case !slots.Readable:
		fmt.Fprintf(w, "org %s: its build slots are not readable with your rights (get organizations.berth.dev %s)\n", slots.Org, slots.Org)
	default:
		limit := "no limit"
		if slots.MaxConcurrentBuilds != nil {
			limit = fmt.Sprintf("at most %d", *slots.MaxConcurrentBuilds)
		}
		fmt.Fprintf(w, "org %s: %d builds running (%s), %d queued in all its namespaces\n", slots.Org, slots.Running, limit, slots.Queued)
	}
}

// PrintOrgs writes kubectl berth orgs: each org's use against its caps.
func PrintOrgs(w io.Writer, format string, list *berthv1alpha1.OrganizationList) error {
	switch format {
	case OutputJSON, OutputYAML:
		return printObject(w, format, list, berthv1alpha1.SchemeGroupVersion.WithKind("OrganizationList"))
	}
	of := func(used int32, limit *int32) string {
		if limit == nil {
			return strconv.Itoa(int(used))
		}
		return fmt.Sprintf("%d/%d", used, *limit)
	}
	header := []string{"ORG", "WORKSPACES", "BUILDS", "QUEUED", "GPUS"}
	if format == OutputWide {
		header = append(header, "IDLE-TIMEOUT", "SPOT")
	}
	var cells [][]string
	for _, o := range list.Items {
		s := o.Status
		c := []string{o.Name, of(s.Workspaces, o.Spec.MaxWorkspaces), of(s.RunningBuilds, o.Spec.MaxConcurrentBuilds),
			strconv.Itoa(int(s.QueuedBuilds)), of(s.GPUs, o.Spec.MaxGPUs)}
		if format == OutputWide {
			idle := ""
			if o.Spec.IdleTimeout != nil {
				idle = o.Spec.IdleTimeout.Duration.String()
			}
			c = append(c, idle, string(o.Spec.SpotPolicy))
		}
		cells = append(cells, c)
	}
	return table(w, header, cells)
}
