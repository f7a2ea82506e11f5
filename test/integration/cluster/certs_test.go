package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/testutil"
	"berth.dev/berth/test/framework"
)

// TestServingCertificateRotatesWithoutFailedAdmissions runs berth-manager
// with a serving certificate valid 20 s and replaced 10 s before it
// expires, and creates labelled Pods through two rotations. Every create
// must be admitted, and the webhook server must serve each new certificate.
func TestServingCertificateRotatesWithoutFailedAdmissions(t *testing.T) {
	env := framework.Cluster(t)
	mgr := framework.StartManager(t, env, framework.ManagerOptions{Args: []string{
		"--scheduler-name=", "--controllers=",
		"--cert-validity=20s", "--cert-renew-before=10s", "--cert-check-interval=1s",
	}})
	org := testutil.Org("rotation").Obj()
	env.Create(t, org)
	ns := env.Namespace(t, org.Name)

	served := map[string]bool{}
	secret := map[string]bool{}
	deadline := time.Now().Add(26 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		pod := testutil.Pod(fmt.Sprintf("ws-%03d", i)).Namespace(ns).Class(berthv1alpha1.ClassWorkspace).Obj()
		require.NoError(t, env.Client.Create(t.Context(), pod), "create %d during rotation", i)
		assert.Equal(t, org.Name, pod.Labels[berthv1alpha1.LabelOrg], "the webhook mutated create %d", i)

		cert, err := servingCert(mgr.Webhook)
		require.NoError(t, err)
		served[cert] = true
		s := &corev1.Secret{}
		require.NoError(t, env.Client.Get(t.Context(), client.ObjectKey{Namespace: "berth-system", Name: "berth-webhook-cert"}, s))
		secret[string(s.Data["tls.crt"])] = true
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("serving certificates seen: %d; in the Secret: %d", len(served), len(secret))
	assert.GreaterOrEqual(t, len(secret), 3, "the Secret's certificate was replaced at least twice")
	assert.GreaterOrEqual(t, len(served), 3, "the webhook server served each new certificate")
}

// servingCert returns the fingerprint of the certificate the webhook server
// at addr presents.
func servingCert(addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // only reads the certificate
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return fmt.Sprintf("%x", sha256.Sum256(c.(*tls.Conn).ConnectionState().PeerCertificates[0].Raw)), nil
}
