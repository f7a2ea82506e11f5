// Package certs serves berth's webhooks over TLS without cert-manager. The
// certificate rotator of open-policy-agent/cert-controller keeps a CA and a
// serving certificate in a Secret, rotates them before they expire and
// injects the CA into berth's webhook configurations. In a cluster the Secret
// is mounted into the Pod; run outside one (the local cluster, tests),
// SyncToDir plays the kubelet and writes the Secret's files into the
// certificate directory. cert-manager remains an option: turn the rotator off
// and mount its Secret instead.
package certs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Options configure the rotator.
type Options struct {
	// Secret holds the CA and serving certificate.
	Secret types.NamespacedName
	// CertDir is where the webhook server reads tls.crt and tls.key.
	CertDir string
	// DNSName is the name the API server dials: the webhook Service's
	// name.namespace.svc, or localhost for a URL webhook.
	DNSName string
	// MutatingWebhooks and ValidatingWebhooks are the configurations to
	// inject the CA into.
	MutatingWebhooks, ValidatingWebhooks []string
	// Sync writes the Secret into CertDir, for processes the kubelet does not
	// mount it for.
	Sync bool
	// ServerCertValidity is how long a serving certificate is valid (default
	// one year); RenewBefore is how long before its expiry it is replaced
	// (default 90 days); CheckInterval is how often that is checked (default
	// 12 hours). The CA is valid ten years and renewed on the same rule.
	ServerCertValidity, RenewBefore, CheckInterval time.Duration
}

// Setup adds the rotator (and the file sync) to the manager. ready is closed
// once a valid certificate is in CertDir.
func Setup(ctx context.Context, mgr manager.Manager, c client.Client, opts Options, ready chan struct{}) error {
	if err := ensureSecret(ctx, c, opts.Secret); err != nil {
		return err
	}
	var hooks []rotator.WebhookInfo
	for _, n := range opts.MutatingWebhooks {
		hooks = append(hooks, rotator.WebhookInfo{Name: n, Type: rotator.Mutating})
	}
	for _, n := range opts.ValidatingWebhooks {
		hooks = append(hooks, rotator.WebhookInfo{Name: n, Type: rotator.Validating})
	}
	if opts.Sync {
		if err := mgr.Add(&syncer{reader: mgr.GetAPIReader(), secret: opts.Secret, dir: opts.CertDir}); err != nil {
			return err
		}
	}
	return rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      opts.Secret,
		CertDir:        opts.CertDir,
		CAName:         "berth-ca",
		CAOrganization: "berth",
		DNSName:        opts.DNSName,
		IsReady:        ready,
		Webhooks:       hooks,
		// Every replica rotates the shared Secret; writes are optimistic.
		RequireLeaderElection:  false,
		ServerCertDuration:     opts.ServerCertValidity,
		LookaheadInterval:      opts.RenewBefore,
		RotationCheckFrequency: opts.CheckInterval,
	})
}

// ensureSecret creates the empty Secret the rotator fills.
func ensureSecret(ctx context.Context, c client.Client, key types.NamespacedName) error {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}, Type: corev1.SecretTypeOpaque}
	if err := c.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create webhook certificate Secret %s: %w", key, err)
	}
	return nil
}

// syncer copies the Secret's certificate and key into dir when they change.
type syncer struct {
	reader client.Reader
	secret types.NamespacedName
	dir    string
}

// NeedLeaderElection is false: every replica serves webhooks.
func (s *syncer) NeedLeaderElection() bool { return false }

// Start polls the Secret until ctx ends.
func (s *syncer) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("certsync")
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if err := s.sync(ctx); err != nil {
			log.V(1).Info("certificate not synced yet", "secret", s.secret, "err", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *syncer) sync(ctx context.Context) error {
	secret := &corev1.Secret{}
	if err := s.reader.Get(ctx, s.secret, secret); err != nil {
		return err
	}
	for _, name := range []string{"tls.crt", "tls.key", "ca.crt"} {
		data := secret.Data[name]
		if len(data) == 0 {
			return fmt.Errorf("secret has no %s yet", name)
		}
		path := filepath.Join(s.dir, name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
			continue
		}
		if err := writeAtomic(path, data); err != nil {
			return err
		}
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
