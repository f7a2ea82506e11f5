package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	certutil "k8s.io/client-go/util/cert"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	berthv1alpha1 "berth.dev/berth/pkg/apis/berth/v1alpha1"
	"berth.dev/berth/pkg/controllers"
)

// apiServer serves berth-meter's HTTPS API on every replica, leader or not.
type apiServer struct {
	addr    string
	handler http.Handler
	tls     *tls.Config
}

// NeedLeaderElection is false: every replica takes events.
func (s *apiServer) NeedLeaderElection() bool { return false }

// Start serves until ctx ends.
func (s *apiServer) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("--api-bind-address %s: %w", s.addr, err)
	}
	srv := &http.Server{Handler: s.handler, TLSConfig: s.tls, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute}
	ctrl.Log.Info("serving the API", "address", ln.Addr().String())
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// serving loads the API's certificate, or makes a self-signed one.
func serving(certFile, keyFile string) (*tls.Config, error) {
	var cert tls.Certificate
	var err error
	switch {
	case certFile != "" && keyFile != "":
		cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	case certFile != "" || keyFile != "":
		return nil, errors.New("--tls-cert-file and --tls-key-file go together; give both, or neither for a self-signed certificate")
	default:
		ctrl.Log.Info("no --tls-cert-file: serving the API with a self-signed certificate")
		var certPEM, keyPEM []byte
		if certPEM, keyPEM, err = certutil.GenerateSelfSignedCertKey("berth-meter", nil, nil); err == nil {
			cert, err = tls.X509KeyPair(certPEM, keyPEM)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("the API's certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// directory answers the audit ingest from the manager's cache.
type directory struct{ c client.Reader }

func (d directory) OrgOf(ctx context.Context, namespace string) (string, error) {
	return controllers.NamespaceOrg(ctx, d.c, namespace)
}

func (d directory) WorkspaceExists(ctx context.Context, namespace, workspace string) (bool, error) {
	var pods corev1.PodList
	err := d.c.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{
		berthv1alpha1.LabelClass: string(berthv1alpha1.ClassWorkspace), berthv1alpha1.LabelWorkspace: workspace,
	})
	return len(pods.Items) > 0, err
}
