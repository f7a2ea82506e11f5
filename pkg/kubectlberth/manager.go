package kubectlberth

import (
	"crypto/tls"
	"crypto/x509"
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

// Meter says how kubectl berth reaches berth-meter's API (usage and the
// audit check), as Manager does for berth-manager's.
type Meter struct {
	// URL is berth-meter's HTTPS base URL, as the platform team exposes
	// it (the berth-meter Service, port 443).
	URL string
	// CAFile holds the PEM CA of berth-meter's certificate; empty means
	// the system's roots.
	CAFile string
}

// Environment variables that stand in for the meter's flags.
const (
	EnvMeterURL    = "BERTH_METER_URL"
	EnvMeterCAFile = "BERTH_METER_CA_FILE"
)

// HTTPClient returns a client of berth-manager that authenticates as the
// kubeconfig's user does to the API server, with a bearer token: a token,
// a token file, or an exec or auth provider that yields one.
func (m Manager) HTTPClient(config *rest.Config) (*http.Client, error) {
	return service{
		name: "berth-manager", url: m.URL, caFile: m.CAFile, urlFlag: "--manager-url", caFlag: "--manager-ca-file", env: EnvManagerURL,
		where: "the URL your platform team gives for berth's API (berth-webhook Service, port 443)",
	}.client(config)
}

// HTTPClient returns a client of berth-meter, with the kubeconfig's
// user's bearer token, as Manager's does.
func (m Meter) HTTPClient(config *rest.Config) (*http.Client, error) {
	return service{
		name: "berth-meter", url: m.URL, caFile: m.CAFile, urlFlag: "--meter-url", caFlag: "--meter-ca-file", env: EnvMeterURL,
		where: "the URL your platform team gives for berth's usage API (berth-meter Service, port 443)",
	}.client(config)
}

// service is one of berth's HTTPS APIs, and the flags that name it.
type service struct {
	name, url, caFile, urlFlag, caFlag, env, where string
}

func (s service) client(config *rest.Config) (*http.Client, error) {
	if s.url == "" {
		return nil, fmt.Errorf("%s's URL is not set: pass %s or set $%s to %s", s.name, s.urlFlag, s.env, s.where)
	}
	if !strings.HasPrefix(s.url, "https://") {
		return nil, fmt.Errorf("%s %q is not an https URL: %s's API takes your Kubernetes token and is served over TLS only", s.urlFlag, s.url, s.name)
	}
	if config.BearerToken == "" && config.BearerTokenFile == "" && config.ExecProvider == nil && config.AuthProvider == nil {
		return nil, fmt.Errorf("your kubeconfig's user has no bearer token (it signs in with a client certificate or a password); %s checks a token with the API server's TokenReview: pass --token, or use a kubeconfig whose user has a token or an exec plugin", s.name)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.caFile != "" {
		pem, err := os.ReadFile(s.caFile)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", s.caFlag, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s %s holds no PEM certificate", s.caFlag, s.caFile)
		}
		tc.RootCAs = pool
	}
	base := &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}
	rt, err := rest.HTTPWrappersForConfig(config, base)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", s.name, err)
	}
	return &http.Client{Transport: rt, Timeout: 30 * time.Second}, nil
}
