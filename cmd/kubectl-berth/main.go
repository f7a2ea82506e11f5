// kubectl-berth is kubectl berth, the developers' plugin for berth. On
// the PATH, kubectl runs it as "kubectl berth".
//
//	kubectl berth build DIR --project P --image IMAGE [-- CMD ARGS...]
//	kubectl berth logs BUILD
//	kubectl berth result BUILD [-o FILE]
//	kubectl berth ls [--user U] [-o table|wide|json|yaml]
//	kubectl berth wake|stop|touch WORKSPACE
//	kubectl berth queue [-o table|wide|json|yaml]
//	kubectl berth orgs [--all] [-o table|wide|json|yaml]
//
// It uses the kubeconfig, context and namespace as kubectl does, and
// reaches berth-manager's API at --manager-url ($BERTH_MANAGER_URL) with
// the same credentials.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/kubectlberth"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if errors.Is(err, errBrokenChain) {
		os.Exit(3)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// options are the flags every command shares.
type options struct {
	kube    *genericclioptions.ConfigFlags
	manager kubectlberth.Manager
	meter   kubectlberth.Meter
}

func newRoot() *cobra.Command {
	o := &options{kube: genericclioptions.NewConfigFlags(true)}
	root := &cobra.Command{
		Use:           "berth",
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl berth"},
		Short:         "berth for developers: builds, their logs and results, workspaces and the build queue",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	o.kube.AddFlags(root.PersistentFlags())
	root.PersistentFlags().StringVar(&o.manager.URL, "manager-url", os.Getenv(kubectlberth.EnvManagerURL),
		"berth-manager's HTTPS URL, as your platform team exposes it [$"+kubectlberth.EnvManagerURL+"]")
	root.PersistentFlags().StringVar(&o.manager.CAFile, "manager-ca-file", os.Getenv(kubectlberth.EnvManagerCAFile),
		"PEM CA of berth-manager's certificate; empty trusts the system's roots [$"+kubectlberth.EnvManagerCAFile+"]")
	root.PersistentFlags().StringVar(&o.meter.URL, "meter-url", os.Getenv(kubectlberth.EnvMeterURL),
		"berth-meter's HTTPS URL, for usage and audit, as your platform team exposes it [$"+kubectlberth.EnvMeterURL+"]")
	root.PersistentFlags().StringVar(&o.meter.CAFile, "meter-ca-file", os.Getenv(kubectlberth.EnvMeterCAFile),
		"PEM CA of berth-meter's certificate; empty trusts the system's roots [$"+kubectlberth.EnvMeterCAFile+"]")
	root.AddCommand(buildCommand(o), logsCommand(o), resultCommand(o), lsCommand(o), queueCommand(o), orgsCommand(o),
		usageCommand(o), auditCommand(o),
		actionCommand(o, kubectlberth.ActionWake, "Start a stopped workspace through berth's admission; --wait holds until it runs"),
		actionCommand(o, kubectlberth.ActionStop, "Stop a workspace: its Pod goes, its volumes stay"),
		actionCommand(o, kubectlberth.ActionTouch, "Record activity on a workspace now, so its idle stop counts from now"))
	return root
}

// client connects to the API server as the kubeconfig's user, in the
// namespace of the flags or the context, and to berth-manager unless
// local is set.
func (o *options) client(cmd *cobra.Command, local ...bool) (*kubectlberth.Client, error) {
	c, config, err := o.kubeClient(cmd)
	if err != nil {
		return nil, err
	}
	if len(local) == 0 || !local[0] {
		if c.Manager, err = o.manager.HTTPClient(config); err != nil {
			return nil, err
		}
		c.ManagerURL = o.manager.URL
	}
	return c, nil
}

// meterClient connects to the API server and to berth-meter.
func (o *options) meterClient(cmd *cobra.Command) (*kubectlberth.Client, error) {
	c, config, err := o.kubeClient(cmd)
	if err != nil {
		return nil, err
	}
	if c.Meter, err = o.meter.HTTPClient(config); err != nil {
		return nil, err
	}
	c.MeterURL = o.meter.URL
	return c, nil
}

// kubeClient connects to the API server as the kubeconfig's user, in the
// namespace of the flags or the context.
func (o *options) kubeClient(cmd *cobra.Command) (*kubectlberth.Client, *rest.Config, error) {
	config, err := o.kube.ToRESTConfig()
	if err != nil {
		return nil, nil, err
	}
	// The API server's warnings read as kubectl prints them, not as logs.
	config.WarningHandler = rest.NewWarningWriter(cmd.ErrOrStderr(), rest.WarningWriterOptions{Deduplicate: true})
	ns, _, err := o.kube.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, nil, err
	}
	kube, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, nil, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	if err := berthv1alpha1.AddToScheme(scheme); err != nil {
		return nil, nil, err
	}
	berth, err := client.New(config, client.Options{Scheme: scheme})
	if err != nil {
		return nil, nil, err
	}
	return &kubectlberth.Client{Kube: kube, Berth: berth, Namespace: ns, Out: cmd.OutOrStdout(), ErrOut: cmd.ErrOrStderr()}, config, nil
}

func buildCommand(o *options) *cobra.Command {
	var b kubectlberth.BuildOptions
	cmd := &cobra.Command{
		Use:   "build DIR --project P [--image IMAGE] [-- CMD ARGS...]",
		Short: "Zip DIR as project P's sources, run the build Job, follow it and fetch result.zip",
		Long: `Zip DIR, leaving out .git and what .gitignore and .berthignore files name,
put it up as the project's source.zip through berth-manager, create the
build Job, follow its queue position and log, and on success write
result.zip to -o FILE (or print a read URL of it).

A symlink in DIR that leads outside DIR stops the build: the build would
see another tree than yours.`,
		Example: `  kubectl berth build . --project shop --image golang:1.26 -o result.zip -- sh -c 'go build -o $BERTH_OUTPUTS/ ./...'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if n := cmd.ArgsLenAtDash(); n == 0 || len(args) == 0 {
				return errors.New("name the folder to build, as in kubectl berth build . --project shop -- make")
			} else if n > 1 || (n < 0 && len(args) > 1) {
				return errors.New("build takes one folder; put the build command after --, as in kubectl berth build . --project shop -- make test")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			b.Dir = args[0]
			if n := cmd.ArgsLenAtDash(); n >= 0 {
				b.Command = args[n:]
			}
			_, err = c.Build(cmd.Context(), b)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&b.Project, "project", "", "the project the sources and results belong to (the berth.dev/project label)")
	f.StringVar(&b.Image, "image", os.Getenv("BERTH_BUILD_IMAGE"), "the image that runs the build [$BERTH_BUILD_IMAGE]")
	f.StringVar(&b.JobFile, "job-file", "", "a Job manifest to start from (resources, service account, env); berth's labels, --image and the command are set on it")
	f.StringVarP(&b.Output, "output", "o", "", "write result.zip here on success; without it, a read URL is printed")
	f.BoolVar(&b.Detach, "detach", false, "return once the Job is created, without following it")
	_ = cmd.MarkFlagRequired("project")
	return cmd
}

func logsCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "logs BUILD",
		Short: "Print the log of a finished build (the project's last)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			return c.Logs(cmd.Context(), args[0])
		},
	}
}

func resultCommand(o *options) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "result BUILD [-o FILE]",
		Short: "Download the result.zip of a succeeded build, or print a read URL of it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			return c.Result(cmd.Context(), args[0], output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write result.zip here")
	return cmd
}

// reader checks -o and connects to the API server only.
func (o *options) reader(cmd *cobra.Command, format string) (*kubectlberth.Client, error) {
	if err := kubectlberth.CheckOutput(format); err != nil {
		return nil, err
	}
	return o.client(cmd, true)
}

// outputFlag adds -o table|wide|json|yaml.
func outputFlag(cmd *cobra.Command, format *string) {
	cmd.Flags().StringVarP(format, "output", "o", kubectlberth.OutputTable, "output format: table, wide, json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(
		[]string{kubectlberth.OutputTable, kubectlberth.OutputWide, kubectlberth.OutputJSON, kubectlberth.OutputYAML}, cobra.ShellCompDirectiveNoFileComp))
}

func lsCommand(o *options) *cobra.Command {
	var format, user string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the namespace's workspaces, running and stopped: phase, idle time, node, pool and cost an hour",
		Long: `List the namespace's workspaces, running and stopped: phase, idle time,
node, pool and, with --meter-url (or $BERTH_METER_URL), what each running
one costs an hour, as berth-meter metered its last interval.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.reader(cmd, format)
			if err != nil {
				return err
			}
			if o.meter.URL != "" {
				if c, err = o.meterClient(cmd); err != nil {
					return err
				}
			}
			list, rows, err := c.Workspaces(cmd.Context(), user, time.Now())
			if err != nil {
				return err
			}
			return kubectlberth.PrintWorkspaces(c.Out, format, list, rows)
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "only the workspaces of this user (the berth.dev/user label)")
	outputFlag(cmd, &format)
	return cmd
}

func queueCommand(o *options) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "queue",
		Short: "List the namespace's builds, queued ones first in the order berth releases them, and the org's build slots",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.reader(cmd, format)
			if err != nil {
				return err
			}
			list, rows, slots, err := c.Queue(cmd.Context(), time.Now())
			if err != nil {
				return err
			}
			kubectlberth.PrintSlots(c.ErrOut, slots)
			return kubectlberth.PrintQueue(c.Out, format, list, rows)
		},
	}
	outputFlag(cmd, &format)
	return cmd
}

func actionCommand(o *options, action, short string) *cobra.Command {
	var format string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   action + " WORKSPACE",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := kubectlberth.CheckOutput(format); err != nil {
				return err
			}
			c, err := o.client(cmd)
			if err != nil {
				return err
			}
			a, err := c.WorkspaceAction(cmd.Context(), args[0], action, wait)
			if err != nil {
				return err
			}
			return kubectlberth.PrintAnswer(c.Out, format, a)
		},
	}
	if action == kubectlberth.ActionWake {
		cmd.Flags().DurationVar(&wait, "wait", 0, "wait until the workspace runs, at most this long (up to 2m); a refused start is an error with admission's reason")
	}
	outputFlag(cmd, &format)
	return cmd
}

func orgsCommand(o *options) *cobra.Command {
	var format string
	var all bool
	cmd := &cobra.Command{
		Use:   "orgs",
		Short: "Show your namespace's org (or --all of them): workspaces, builds and GPUs in use against their caps",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := o.reader(cmd, format)
			if err != nil {
				return err
			}
			list, err := c.Orgs(cmd.Context(), all)
			if err != nil {
				return err
			}
			return kubectlberth.PrintOrgs(c.Out, format, list)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "every Organization, not only the namespace's")
	outputFlag(cmd, &format)
	return cmd
}

func usageCommand(o *options) *cobra.Command {
	var format string
	var u kubectlberth.UsageOptions
	cmd := &cobra.Command{
		Use:   "usage [--org ORG] [--by user|workspace|project|class|pool] [--since 720h] [--until TIME]",
		Short: "Show an org's usage and cost from berth-meter: hours, CPU, memory and GPU hours, spot and on-demand dollars",
		Long: `Show an org's usage and cost, summed by user, workspace, project, class or
pool, as berth-meter has it in PostgreSQL. The org is the namespace's
unless --org names one. You need get on usage.berth.dev named after the
org (cluster-wide); ask the platform team for it.`,
		Example: `  kubectl berth usage --by project --since 168h
  kubectl berth usage --org acme --by user --since 2026-11-01T00:00:00Z --until 2026-12-01T00:00:00Z -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := kubectlberth.CheckOutput(format); err != nil {
				return err
			}
			c, err := o.meterClient(cmd)
			if err != nil {
				return err
			}
			rep, err := c.Usage(cmd.Context(), u, time.Now())
			if err != nil {
				return err
			}
			return kubectlberth.PrintUsage(c.Out, format, rep)
		},
	}
	f := cmd.Flags()
	f.StringVar(&u.Org, "org", "", "the Organization; default the namespace's")
	f.StringVar(&u.By, "by", "user", "sum by user, workspace, project, class or pool")
	f.StringVar(&u.Since, "since", "", "start: an RFC 3339 time or a duration before now (720h); default 30 days ago")
	f.StringVar(&u.Until, "until", "", "end: an RFC 3339 time or a duration before now; default now")
	_ = cmd.RegisterFlagCompletionFunc("by", cobra.FixedCompletions(
		[]string{"user", "workspace", "project", "class", "pool"}, cobra.ShellCompDirectiveNoFileComp))
	outputFlag(cmd, &format)
	return cmd
}

// errBrokenChain makes kubectl berth exit 3, as berth-meter audit verify
// does, when an audit chain does not verify.
var errBrokenChain = errors.New("the audit chain does not verify")

func auditCommand(o *options) *cobra.Command {
	audit := &cobra.Command{Use: "audit", Short: "Check an org's tamper-evident audit log"}
	var org, format string
	verify := &cobra.Command{
		Use:   "verify [--org ORG]",
		Short: "Have berth-meter recompute an org's audit chain and name the first row changed, removed or reordered",
		Long: `Have berth-meter recompute the org's audit chain from its first row. It
prints the rows verified and the head (last row and its hash), or the first
row that was changed, removed or reordered, and then exits 3. Keep the head
somewhere the database's administrators cannot write: a chain cut at its
end is still whole. You need get on auditlogs.berth.dev named after the org
(cluster-wide).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := kubectlberth.CheckOutput(format); err != nil {
				return err
			}
			c, err := o.meterClient(cmd)
			if err != nil {
				return err
			}
			rep, err := c.AuditVerify(cmd.Context(), org)
			if err != nil {
				return err
			}
			if err := kubectlberth.PrintAudit(c.Out, format, rep); err != nil {
				return err
			}
			if rep.Broken != nil {
				return errBrokenChain
			}
			return nil
		},
	}
	verify.Flags().StringVar(&org, "org", "", "the Organization; default the namespace's")
	outputFlag(verify, &format)
	audit.AddCommand(verify)
	return audit
}
