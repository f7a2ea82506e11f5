package framework

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Azurite's well-known development account.
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Azurite is Azurite's blob service on 127.0.0.1, storing into a temp dir.
// Stop and Start let a test take it away mid-transfer and bring it back with
// the same port and data.
type Azurite struct {
	Port int
	dir  string
	bin  string
	cmd  *exec.Cmd
	// tls, when set, makes Azurite serve HTTPS and accept Azure AD bearer
	// tokens (--oauth basic), as the service does for workload identity.
	tls *tlsFiles
}

type tlsFiles struct {
	cert, key string
	pool      *x509.CertPool
}

// AzuriteServer returns the package's Azurite, starting it on first use.
func AzuriteServer(t testing.TB) *Azurite {
	t.Helper()
	requireMain(t)
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.azurite == nil && state.azuriteErr == nil {
		state.azurite, state.azuriteErr = startAzurite(t.Context())
	}
	if state.azuriteErr != nil {
		t.Fatalf("framework: start Azurite: %v", state.azuriteErr)
	}
	return state.azurite
}

// AzuriteOAuthServer returns the package's Azurite on HTTPS that accepts
// Azure AD bearer tokens, starting it on first use: the service as workload
// identity sees it. Its certificate is self-signed; HTTPClient trusts it and
// TokenCredential gives tokens it accepts (it checks their issuer, audience
// and times, not their signature).
func AzuriteOAuthServer(t testing.TB) *Azurite {
	t.Helper()
	requireMain(t)
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.azuriteOAuth == nil && state.azuriteOAuthErr == nil {
		state.azuriteOAuth, state.azuriteOAuthErr = startAzuriteIn(t.Context(), "azurite-oauth", true)
	}
	if state.azuriteOAuthErr != nil {
		t.Fatalf("framework: start Azurite with OAuth: %v", state.azuriteOAuthErr)
	}
	return state.azuriteOAuth
}

func startAzurite(ctx context.Context) (*Azurite, error) {
	return startAzuriteIn(ctx, "azurite", false)
}

func startAzuriteIn(ctx context.Context, name string, oauth bool) (*Azurite, error) {
	if _, err := os.Stat(state.tools.AzuriteBlob); err != nil {
		return nil, fmt.Errorf("azurite-blob not found at %s; run `make tools`", state.tools.AzuriteBlob)
	}
	a := &Azurite{dir: filepath.Join(state.dir, name), bin: state.tools.AzuriteBlob}
	if err := os.MkdirAll(a.dir, 0o755); err != nil {
		return nil, err
	}
	if oauth {
		var err error
		if a.tls, err = selfSigned(a.dir); err != nil {
			return nil, err
		}
	}
	onTeardown("", func() { a.Stop() })
	// A port found free may be taken before Azurite binds it: then it is
	// started again, on another port.
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		a.Port = port
		err = a.Start(ctx)
		if err == nil {
			return a, nil
		}
		if attempt == 3 || !strings.Contains(err.Error(), "EADDRINUSE") {
			return nil, err
		}
	}
}

// BlobEndpoint is the account's blob service URL. The OAuth Azurite is
// reached as Azure is, by an account host name
// (https://devstoreaccount1.blob.localhost:PORT), since the SDK takes the
// account of a user delegation key from the host; HTTPClient dials it.
func (a *Azurite) BlobEndpoint() string {
	if a.tls != nil {
		return fmt.Sprintf("https://%s.blob.localhost:%d", AzuriteAccount, a.Port)
	}
	return fmt.Sprintf("http://127.0.0.1:%d/%s", a.Port, AzuriteAccount)
}

// HTTPClient is an HTTP client that trusts Azurite's certificate and dials
// *.localhost on 127.0.0.1.
func (a *Azurite) HTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if a.tls != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: a.tls.pool, MinVersion: tls.VersionTLS12}
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, port, err := net.SplitHostPort(addr); err == nil && strings.HasSuffix(host, ".localhost") {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			return d.DialContext(ctx, network, addr)
		}
	}
	return &http.Client{Transport: tr}
}

// TokenCredential gives Azure AD access tokens that an OAuth Azurite
// accepts, valid for an hour.
func (a *Azurite) TokenCredential() azcore.TokenCredential { return fakeToken{} }

type fakeToken struct{}

func (fakeToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	now := time.Now()
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	claims := map[string]any{
		"iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
		"aud": "https://storage.azure.com", "oid": "00000000-0000-0000-0000-00000000b17e",
		"tid": "00000000-0000-0000-0000-000000000000",
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	tok := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims) + "." +
		base64.RawURLEncoding.EncodeToString([]byte("unsigned"))
	return azcore.AccessToken{Token: tok, ExpiresOn: now.Add(time.Hour)}, nil
}

// selfSigned writes a certificate and key for 127.0.0.1 and localhost
// into dir.
func selfSigned(dir string) (*tlsFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "azurite"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost", AzuriteAccount + ".blob.localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:        true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	f := &tlsFiles{cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem"), pool: x509.NewCertPool()}
	f.pool.AddCert(cert)
	if err := os.WriteFile(f.cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(f.key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	return f, nil
}

// ConnectionString is a storage connection string for the account.
func (a *Azurite) ConnectionString() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;",
		AzuriteAccount, AzuriteKey, a.BlobEndpoint())
}

// Start starts Azurite, or starts it again after Stop, and waits until it
// listens.
func (a *Azurite) Start(ctx context.Context) error {
	if a.cmd != nil {
		return nil
	}
	logPath := filepath.Join(a.dir, "azurite.log")
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	before, err := log.Stat()
	if err != nil {
		return err
	}
	args := []string{"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(a.Port),
		"--location", filepath.Join(a.dir, "data"), "--skipApiVersionCheck", "--loose", "--silent"}
	if a.tls != nil {
		args = append(args, "--cert", a.tls.cert, "--key", a.tls.key, "--oauth", "basic")
	}
	cmd := exec.Command(a.bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start azurite: %w", err)
	}
	a.cmd = cmd
	// Node forks nothing here, but kill the whole group to be sure.
	state.watchdog.add(fmt.Sprintf("kill -9 -%d", cmd.Process.Pid))
	if err := a.waitListening(ctx, logPath, before.Size()); err != nil {
		a.Stop()
		return fmt.Errorf("azurite: %w (log in %s)", err, logPath)
	}
	return nil
}

// waitListening waits until Azurite's log, past offset, says that it
// listens, or that it exited. Its own word, not a connection to the port,
// which another process may hold.
func (a *Azurite) waitListening(ctx context.Context, logPath string, offset int64) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := os.ReadFile(logPath)
		out = out[min(offset, int64(len(out))):]
		switch {
		case bytes.Contains(out, []byte("successfully listens on")):
			return nil
		case bytes.Contains(out, []byte("Exit due to")):
			return fmt.Errorf("exited: %s", bytes.TrimSpace(out))
		case time.Now().After(deadline):
			return fmt.Errorf("not listening on port %d after 30s", a.Port)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop stops Azurite, as an outage would: connections are refused from then
// on. Its data is flushed and stays for Start.
func (a *Azurite) Stop() {
	if a.cmd == nil {
		return
	}
	done := make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(done) }()
	_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	a.cmd = nil
}
