package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/audit"
	"berth.dev/berth/pkg/controllers"
	"berth.dev/berth/pkg/manager"
	"berth.dev/berth/pkg/metering"
	"berth.dev/berth/pkg/placement"
	"berth.dev/berth/pkg/store"
)

// runMeter migrates the database and meters labelled Pods until ctx ends.
func runMeter(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	url := fs.String("database-url", "", "PostgreSQL DSN (default $BERTH_DATABASE_URL)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the cluster (default: in-cluster, or $KUBECONFIG)")
	pricesFile := fs.String("prices", "", "pool prices, in the pools-file form (pools: [{name, price: {onDemand, spot}}]); empty charges no cost")
	poolLabel := fs.String("pool-label", metering.DefaultPoolLabel, "node label naming a node's pool, as --prices names it")
	preset := fs.String("placement-preset", placement.PresetAKS, "node label keys that mark spot nodes: "+strings.Join(placement.PresetNames(), ", "))
	interval := fs.Duration("interval", metering.DefaultInterval, "length of one usage interval; 1s or more, in whole seconds")
	namespace := fs.String("namespace", "berth-system", "berth's own namespace, for the leader lease")
	leaderElect := fs.Bool("leader-elect", false, "elect a leader, for several replicas: only the leader meters")
	metricsAddr := fs.String("metrics-bind-address", ":8080", "host:port of the Prometheus metrics; 0 turns them off")
	healthAddr := fs.String("health-probe-bind-address", ":8081", "host:port of /healthz and /readyz")
	apiAddr := fs.String("api-bind-address", ":8443", "host:port of the HTTPS API ("+metering.UsagePath+", /v1/namespaces/{ns}/costs, and "+audit.IngestPath+" and "+audit.VerifyPath+" with --audit-keys); 0 turns it off")
	certFile := fs.String("tls-cert-file", "", "the API's serving certificate (PEM); empty generates a self-signed one")
	keyFile := fs.String("tls-key-file", "", "the key of --tls-cert-file")
	auditKeys := fs.String("audit-keys", "", "directory of audit HMAC keys, one file per key id (the mounted Secret); empty turns the audit log off (the ingest, and the rows of berth-manager's own actions)")
	auditKeyID := fs.String("audit-key-id", "", "the key id new audit rows are signed with (default: the greatest)")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.Var(klogFlagValue{klogFlags, "v"}, "v", "log verbosity")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	ctrl.SetLogger(klog.NewKlogr())
	if *interval < time.Second || *interval%time.Second != 0 {
		return fmt.Errorf("--interval %s: use whole seconds, 1s or more, such as 1m", *interval)
	}
	keys, err := placement.Preset(*preset)
	if err != nil {
		return fmt.Errorf("--placement-preset: %w", err)
	}
	prices := metering.Prices{}
	if *pricesFile != "" {
		data, err := os.ReadFile(*pricesFile)
		if err != nil {
			return fmt.Errorf("--prices: %w", err)
		}
		if prices, err = metering.ParsePrices(data); err != nil {
			return fmt.Errorf("--prices %s: %w", *pricesFile, err)
		}
	}
	db, err := openDB(ctx, *url)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := store.Migrate(ctx, db); err != nil {
		return err
	}

	if *kubeconfig != "" {
		if err := os.Setenv("KUBECONFIG", *kubeconfig); err != nil {
			return err
		}
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	scheme, err := manager.Scheme()
	if err != nil {
		return err
	}
	labelled, err := labels.NewRequirement(berthv1alpha1.LabelClass, selection.Exists, nil)
	if err != nil {
		return err
	}
	// Only labelled Pods and Jobs are cached: the meter never reads the
	// others. With audit keys, so are berth-manager's audited Events.
	byObject := map[client.Object]cache.ByObject{
		&corev1.Pod{}:  {Label: labels.NewSelector().Add(*labelled)},
		&batchv1.Job{}: {Label: labels.NewSelector().Add(*labelled)},
	}
	var ring *audit.Keyring
	if *auditKeys != "" {
		if ring, err = audit.LoadKeyring(*auditKeys, *auditKeyID); err != nil {
			return fmt.Errorf("--audit-keys: %w", err)
		}
		obj, by := audit.EventsCache()
		byObject[obj] = by
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: *metricsAddr},
		HealthProbeBindAddress:  *healthAddr,
		LeaderElection:          *leaderElect,
		LeaderElectionID:        "berth-meter",
		LeaderElectionNamespace: *namespace,
		Cache:                   cache.Options{ByObject: byObject},
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	measure, err := measurer(mgr, *interval)
	if err != nil {
		return err
	}
	m := &metering.Meter{Client: mgr.GetClient(), DB: db, Prices: prices, Keys: keys, PoolLabel: *poolLabel, Interval: *interval, Measure: measure}
	if err := m.Register(mgr); err != nil {
		return err
	}
	if err := (&metering.WorkspaceMeter{Meter: m}).Register(mgr); err != nil {
		return err
	}
	if err := mgr.Add(&metering.TokenScraper{Meter: m, Every: *interval / 2, HTTP: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{}}}); err != nil {
		return err
	}
	if err := (&metering.QuotaMirror{Client: mgr.GetClient(), DB: db}).Register(mgr); err != nil {
		return err
	}
	if err := (&metering.BuildMirror{Client: mgr.GetClient(), DB: db}).Register(mgr); err != nil {
		return err
	}
	if ring != nil {
		if err := (&audit.Events{Client: mgr.GetClient(), Log: &audit.Log{DB: db, Keys: ring}}).Register(mgr); err != nil {
			return err
		}
	}
	if *apiAddr != "0" {
		kube, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle(metering.UsagePath, &metering.UsageAPI{DB: db, Kube: kube, Now: time.Now})
		mux.Handle(metering.CostsPattern, &metering.CostAPI{DB: db, Kube: kube, Now: time.Now,
			Org: func(ctx context.Context, ns string) (string, error) {
				return controllers.NamespaceOrg(ctx, mgr.GetClient(), ns)
			}})
		if ring != nil {
			log := &audit.Log{DB: db, Keys: ring}
			mux.Handle(audit.IngestPath, &audit.Ingest{Log: log, Kube: kube, Dir: directory{mgr.GetClient()}, Now: time.Now})
			mux.Handle(audit.VerifyPattern, &audit.VerifyAPI{Log: log, Kube: kube})
		}
		tlsCfg, err := serving(*certFile, *keyFile)
		if err != nil {
			return err
		}
		if err := mgr.Add(&apiServer{addr: *apiAddr, handler: mux, tls: tlsCfg}); err != nil {
			return err
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("database", func(*http.Request) error { return db.Ping(ctx) }); err != nil {
		return err
	}
	ctrl.Log.Info("starting berth-meter", "interval", interval.String(), "pools", len(prices), "poolLabel", *poolLabel,
		"api", *apiAddr, "auditIngest", *auditKeys != "")
	return mgr.Start(ctx)
}

// klogFlagValue forwards one flag to klog's own flag set.
type klogFlagValue struct {
	fs   *flag.FlagSet
	name string
}

func (v klogFlagValue) String() string {
	if v.fs == nil {
		return ""
	}
	return v.fs.Lookup(v.name).Value.String()
}

func (v klogFlagValue) Set(s string) error { return v.fs.Set(v.name, s) }

// measurer reads PodMetrics from metrics.k8s.io straight from the API
// server, one list every half interval, so that each interval has a sample.
func measurer(mgr ctrl.Manager, interval time.Duration) (*metering.Measurer, error) {
	s := runtime.NewScheme()
	if err := metricsv1beta1.AddToScheme(s); err != nil {
		return nil, err
	}
	c, err := client.New(mgr.GetConfig(), client.Options{Scheme: s})
	if err != nil {
		return nil, err
	}
	return &metering.Measurer{Reader: c, Every: interval / 2, Clock: clock.RealClock{}}, nil
}
