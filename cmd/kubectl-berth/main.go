// kubectl-berth is kubectl berth, the developers' plugin for berth. On
// the PATH, kubectl runs it as "kubectl berth".
//
//	kubectl berth build DIR --project P --image IMAGE [-- CMD ARGS...]
//	kubectl berth logs BUILD
//	kubectl berth result BUILD [-o FILE]
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

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"

	"berth.dev/berth/pkg/kubectlberth"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// options are the flags every command shares.
type options struct {
	kube    *genericclioptions.ConfigFlags
	manager kubectlberth.Manager
}

func newRoot() *cobra.Command {
	o := &options{kube: genericclioptions.NewConfigFlags(true)}
	root := &cobra.Command{
		Use:           "berth",
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl berth"},
		Short:         "Build, follow and fetch berth builds",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	o.kube.AddFlags(root.PersistentFlags())
	root.PersistentFlags().StringVar(&o.manager.URL, "manager-url", os.Getenv(kubectlberth.EnvManagerURL),
		"berth-manager's HTTPS URL, as your platform team exposes it [$"+kubectlberth.EnvManagerURL+"]")
	root.PersistentFlags().StringVar(&o.manager.CAFile, "manager-ca-file", os.Getenv(kubectlberth.EnvManagerCAFile),
		"PEM CA of berth-manager's certificate; empty trusts the system's roots [$"+kubectlberth.EnvManagerCAFile+"]")
	root.AddCommand(buildCommand(o), logsCommand(o), resultCommand(o))
	return root
}

// client connects to the API server and berth-manager as the kubeconfig's
// user, in the namespace of the flags or the context.
func (o *options) client(cmd *cobra.Command) (*kubectlberth.Client, error) {
	config, err := o.kube.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	ns, _, err := o.kube.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	hc, err := o.manager.HTTPClient(config)
	if err != nil {
		return nil, err
	}
	return &kubectlberth.Client{Kube: kube, Manager: hc, ManagerURL: o.manager.URL, Namespace: ns,
		Out: cmd.OutOrStdout(), ErrOut: cmd.ErrOrStderr()}, nil
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
