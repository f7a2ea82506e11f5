package metering

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Measurer reads what Pods use from metrics.k8s.io. It lists every
// PodMetrics at most once per Every, and the Pods' reconciles share the
// list: one request per period, whatever the number of Pods.
type Measurer struct {
	// Reader reads metrics.k8s.io (a client whose scheme knows PodMetrics).
	Reader client.Reader
	// Every is how old a list may be before it is taken again.
	Every time.Duration
	Clock clock.PassiveClock

	mu    sync.Mutex
	at    time.Time
	byPod map[types.NamespacedName]Usage
}

// Use returns what the Pod ns/name used in metrics-server's last window.
// Measured is false when there is no sample of it, or metrics.k8s.io is
// not served: requests alone are charged then.
func (m *Measurer) Use(ctx context.Context, ns, name string) (Usage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.Clock.Now()
	if m.byPod == nil || now.Sub(m.at) >= m.Every {
		byPod, err := m.list(ctx)
		m.at = now
		if err != nil {
			// Keep no stale samples: a Pod's use is charged once, in the
			// interval its sample was taken in.
			m.byPod = map[types.NamespacedName]Usage{}
			return Usage{}, err
		}
		m.byPod = byPod
	}
	return m.byPod[types.NamespacedName{Namespace: ns, Name: name}], nil
}

func (m *Measurer) list(ctx context.Context) (map[types.NamespacedName]Usage, error) {
	var list metricsv1beta1.PodMetricsList
	if err := m.Reader.List(ctx, &list); err != nil {
		var discoveryFailed *discovery.ErrGroupDiscoveryFailed
		if !errors.As(err, &discoveryFailed) && meta.IsNoMatchError(err) {
			return nil, nil // the cluster serves no metrics.k8s.io
		}
		measureErrors.Inc()
		return nil, fmt.Errorf("list PodMetrics from metrics.k8s.io: %w", err)
	}
	out := make(map[types.NamespacedName]Usage, len(list.Items))
	for i := range list.Items {
		pm := &list.Items[i]
		u := Usage{Measured: true}
		for _, c := range pm.Containers {
			cpu, mem := c.Usage[corev1.ResourceCPU], c.Usage[corev1.ResourceMemory]
			u.CPU += float64(cpu.MilliValue()) / 1000
			u.MemoryGiB += gib(&mem)
		}
		out[types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name}] = u
	}
	return out, nil
}

// maxSamples bounds the samples the meter keeps of one Pod while it cannot
// write them (PostgreSQL down): three hours of one-minute intervals. Past
// that, the oldest intervals are charged their requests.
const maxSamples = 180

// samples holds, per Pod, the largest sample taken in each interval not
// yet written for good.
type samples map[types.UID]map[time.Time]Usage

// add merges a sample into the interval starting at start.
func (s samples) add(uid types.UID, start time.Time, u Usage) {
	byStart := s[uid]
	if byStart == nil {
		byStart = map[time.Time]Usage{}
		s[uid] = byStart
	}
	old := byStart[start]
	byStart[start] = Usage{CPU: max(old.CPU, u.CPU), MemoryGiB: max(old.MemoryGiB, u.MemoryGiB), Measured: true}
	for len(byStart) > maxSamples {
		oldest := start
		for t := range byStart {
			if t.Before(oldest) {
				oldest = t
			}
		}
		delete(byStart, oldest)
	}
}

// of returns what Intervals needs for one Pod: its sample in each interval.
func (s samples) of(uid types.UID) func(time.Time) Usage {
	byStart := s[uid]
	cp := make(map[time.Time]Usage, len(byStart))
	for k, v := range byStart {
		cp[k] = v
	}
	return func(start time.Time) Usage { return cp[start] }
}

// written forgets the samples of intervals before from: they are in the
// database, where a later rewrite finds them.
func (s samples) written(uid types.UID, from time.Time) {
	for t := range s[uid] {
		if t.Before(from) {
			delete(s[uid], t)
		}
	}
}
