package kubectlberth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// Manager says how kubectl berth reaches berth-manager's API: its URL,
// the CA its serving certificate chains to, and the developer's
// Kubernetes credentials, which berth-manager checks with the API server.
type Manager struct {
	// URL is berth-manager's HTTPS base URL, as the platform team exposes
	// it (an Ingress or a LoadBalancer to the berth-webhook Service's
	// port 443).
	URL string
	// CAFile holds the PEM CA of berth-manager's certificate; empty means
	// the system's roots.
	CAFile string
}

// Environment variables that stand in for the flags.
const (
	EnvManagerURL    = "BERTH_MANAGER_URL"
	EnvManagerCAFile = "BERTH_MANAGER_CA_FILE"
)

// HTTPClient returns a client of berth-manager that authenticates as the
// kubeconfig's user does to the API server, with a bearer token: a token,
// a token file, or an exec or auth provider that yields one.
func (m Manager) HTTPClient(config *rest.Config) (*http.Client, error) {
	if m.URL == "" {
		return nil, fmt.Errorf("berth-manager's URL is not set: pass --manager-url or set $%s to the URL your platform team gives for berth's API (berth-webhook Service, port 443)", EnvManagerURL)
	}
	if !strings.HasPrefix(m.URL, "https://") {
		return nil, fmt.Errorf("--manager-url %q is not an https URL: berth-manager's API takes your Kubernetes token and is served over TLS only", m.URL)
	}
	if config.BearerToken == "" && config.BearerTokenFile == "" && config.ExecProvider == nil && config.AuthProvider == nil {
		return nil, errors.New("your kubeconfig's user has no bearer token (it signs in with a client certificate or a password); berth-manager checks a token with the API server's TokenReview: pass --token, or use a kubeconfig whose user has a token or an exec plugin")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if m.CAFile != "" {
		pem, err := os.ReadFile(m.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read --manager-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--manager-ca-file %s holds no PEM certificate", m.CAFile)
		}
		tc.RootCAs = pool
	}
	base := &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}
	rt, err := rest.HTTPWrappersForConfig(config, base)
	if err != nil {
		return nil, fmt.Errorf("credentials for berth-manager: %w", err)
	}
	return &http.Client{Transport: rt, Timeout: 30 * time.Second}, nil
}
