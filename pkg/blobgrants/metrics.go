package blobgrants

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var grants = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "berth_blob_grants_total",
	Help: "Blob URLs asked for by build Pods, by access (read, write) and result (granted, refused, error).",
}, []string{"access", "result"})

func init() { metrics.Registry.MustRegister(grants) }
